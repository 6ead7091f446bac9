-- The upload session that last committed each root, so that a commit retried after
-- its answer was lost (a reset, a proxy's timeout) is answered 204 like the first,
-- not 404: the session row is gone by then, but its commit is not.
ALTER TABLE closures ADD COLUMN last_session BIGINT;
CREATE INDEX closures_last_session ON closures (last_session);
