-- The generation exported_max_id was recorded for. A gateway running code from before 009 (a
-- rolling upgrade, a rollback) switches generations without touching exported_max_id; a highest
-- id left from an earlier generation would then miss the rows that export added. Only a highest
-- id recorded for the current generation is used.
ALTER TABLE lake_state ADD COLUMN exported_max_generation bigint;
