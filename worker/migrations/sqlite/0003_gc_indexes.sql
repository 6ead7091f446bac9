-- Garbage collection at scale (docs/gc.md, "Cost"): the sweep finds marked objects with
-- one scan of the table (db::gc::start_sweep), so no index has to follow every mark.
-- The index on marked_epoch was used by nothing else.
DROP INDEX objects_marked;
