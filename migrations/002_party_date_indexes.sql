-- migrate:no-transaction
-- CONCURRENTLY: on a user's large, busy invoices table a plain CREATE INDEX would block every
-- insert for the whole build. A build that failed half-way leaves an INVALID index that
-- IF NOT EXISTS would skip for ever, so such a leftover is dropped first.
-- invoice_id is the third column so that connections ordered by (issue_date, invoice_id) are
-- read straight off the index; the index still serves every (issuer_id, issue_date) query.
-- The names carry "gw" so that a user's own index on (issuer_id, issue_date), which Postgres
-- would auto-name invoices_issuer_id_issue_date_idx, never stands in for these.
DO $$
DECLARE leftover text;
BEGIN
  FOR leftover IN
    SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid
      AND c.relname IN ('invoices_gw_issuer_date_id_idx', 'invoices_gw_receiver_date_id_idx')
  LOOP
    EXECUTE format('DROP INDEX %I', leftover);
  END LOOP;
END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_gw_issuer_date_id_idx
  ON invoices (issuer_id, issue_date, invoice_id);

CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_gw_receiver_date_id_idx
  ON invoices (receiver_id, issue_date, invoice_id);
