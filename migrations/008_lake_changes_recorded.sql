-- How many batches of invoice changes the feed has recorded: while it stays the same (and the
-- generation too), no invoice has changed, so a whole answer computed earlier is still exact
-- and later pages of it are slices, not new queries.
ALTER TABLE lake_state ADD COLUMN changes_recorded bigint NOT NULL DEFAULT 0;
