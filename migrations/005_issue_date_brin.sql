-- migrate:no-transaction
-- The lake export reads invoices a month at a time. Issue dates grow with the table, so a BRIN
-- index (a few pages, next to nothing to maintain on insert) finds a month's blocks where a
-- B-tree would cost every writer another index update. As in 002, a leftover INVALID index of
-- a failed build is dropped first.
DO $$
BEGIN
  IF EXISTS (
    SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
    WHERE c.relnamespace = current_schema()::regnamespace AND NOT i.indisvalid AND c.relname = 'invoices_gw_issue_date_brin'
  ) THEN
    DROP INDEX invoices_gw_issue_date_brin;
  END IF;
END $$;

CREATE INDEX CONCURRENTLY IF NOT EXISTS invoices_gw_issue_date_brin ON invoices USING brin (issue_date);
