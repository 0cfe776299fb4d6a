-- Whether a query's snapshot sees every recorded change is asked of every lake answer. Only
-- changes of transactions at or past the snapshot's xmin can be unseen (every older one had
-- ended): with this index only those are read (by hand at 10M, 10,000 fresh inserts recorded:
-- 0.12 ms, against 0.9 ms for a scan of every entry).
CREATE INDEX lake_changes_xid ON lake_changes (xid);
