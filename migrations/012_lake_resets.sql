-- Counts the lake's resets (a new feed slot, a TRUNCATE of invoices). An export that began at
-- generation 0 cannot tell a reset from none by the generation alone (it is 0 again after one),
-- and the changes committed between its snapshot and a new slot are never recorded: it may
-- switch the lake only if the count is the one its snapshot read.
ALTER TABLE lake_state ADD COLUMN resets bigint NOT NULL DEFAULT 0;
