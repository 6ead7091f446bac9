-- Garbage collection at scale (docs/gc.md, "Cost"; docs/benchmarks.md).
--
-- No index may cover the mark columns: then marking an object, like a push stamping
-- one, changes no indexed column, and PostgreSQL rewrites the row in place on its own
-- page ("HOT") instead of adding a new entry to every index of the table. The sweep
-- finds marked objects with one scan of the table instead (db::gc::start_sweep). The
-- index on marked_epoch was used by nothing else.
DROP INDEX objects_marked;

-- Room on every page for the new versions of the rows a run marks (a first collection
-- of a big cache marks over half of them) and of the rows pushes stamp. It applies to
-- pages filled from now on; VACUUM FULL objects applies it to the existing ones.
ALTER TABLE objects SET (fillfactor = 60);
