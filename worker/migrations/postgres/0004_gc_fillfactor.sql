-- Garbage collection at scale (docs/gc.md, "Cost"): room on every page of `objects` for
-- a new version of each of its rows, so marking stays in place ("HOT") even on a page
-- whose every object is garbage (a first collection of a big cache marks about half
-- the table, in runs of whole pages: at fill factor 60 four in ten marks of the
-- benchmark did not fit, and each added entries to the table's indexes). A marked row
-- is 16 bytes longer than an unmarked one (marked_epoch and marked_at stop being NULL),
-- so a page must start less than half full. It applies to pages filled from now on;
-- VACUUM FULL objects applies it to the existing ones.
ALTER TABLE objects SET (fillfactor = 45);
