-- The highest invoice id the current generation's export could see. An invoice above it cannot
-- be in the lake, so a query reads those from Postgres as one range of the primary key instead
-- of listing each fresh insert from lake_changes. NULL (a lake exported before this column, or
-- none): not known, and every change is listed as before.
ALTER TABLE lake_state ADD COLUMN exported_max_id bigint;
