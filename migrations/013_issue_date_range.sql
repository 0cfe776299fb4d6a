-- Issue dates from year 1 to 9999 (UTC), the range every reader of the table handles: the
-- DateTime scalar, the risk scorer's parameters and the lake's YYYY-MM partitions. Postgres takes
-- years up to 294276, and one invoice dated 10000 (from any client: psql, an importer) failed
-- its lookups and stopped the change feed for good, retrying that transaction forever.
-- NOT VALID: rows already there are not scanned (nor refused); every new or updated row is checked.
ALTER TABLE invoices ADD CONSTRAINT invoices_gw_issue_date_range
  CHECK (issue_date >= '0001-01-01 00:00:00+00' AND issue_date < '10000-01-01 00:00:00+00') NOT VALID;
