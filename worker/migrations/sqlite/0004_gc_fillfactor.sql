-- PostgreSQL's migration 0004 lowers the fill factor of `objects` so that marking rewrites
-- rows in place. SQLite has no such setting; this keeps the two schemas at one version.
SELECT 1;
