-- Larder's schema. Times are Unix milliseconds (BIGINT) so PostgreSQL and SQLite
-- share every query. See docs/gc.md for how the epoch columns keep GC safe.

-- Everything the bucket holds that a committed closure put there.
CREATE TABLE objects (
    key           TEXT PRIMARY KEY,
    kind          BIGINT NOT NULL,           -- 0 narinfo, 1 nar, 2 listing, 3 build_log, 4 realisation
    nar_size      BIGINT,
    file_size     BIGINT,
    file_hash     TEXT,
    created_at    BIGINT NOT NULL,
    touched_at    BIGINT NOT NULL,             -- last push or commit that relied on it
    touched_epoch BIGINT NOT NULL DEFAULT 0,   -- GC epoch of that push
    marked_epoch  BIGINT,                      -- set by a GC mark when unreachable
    marked_at     BIGINT
);
CREATE INDEX objects_marked ON objects (marked_epoch) WHERE marked_epoch IS NOT NULL;

-- What each object references (a narinfo: its NAR, listing, dependencies' narinfos).
CREATE TABLE refs (
    from_key TEXT NOT NULL,
    to_key   TEXT NOT NULL,
    PRIMARY KEY (from_key, to_key)
);
CREATE INDEX refs_to ON refs (to_key);

-- GC roots: committed closures, aged by their last push.
CREATE TABLE closures (
    key        TEXT PRIMARY KEY,               -- the root's narinfo key
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX closures_updated ON closures (updated_at);

-- Upload sessions in flight.
CREATE TABLE pending_closures (
    id          BIGSERIAL PRIMARY KEY,
    closure_key TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    epoch       BIGINT NOT NULL
);
CREATE INDEX pending_closures_started ON pending_closures (started_at);

-- Every object of an upload session, whether it must be uploaded or is present.
CREATE TABLE pending_objects (
    pending_id   BIGINT NOT NULL REFERENCES pending_closures (id) ON DELETE CASCADE,
    key          TEXT NOT NULL,
    kind         BIGINT NOT NULL,
    refs         TEXT NOT NULL,                -- JSON array of object keys
    nar_size     BIGINT,
    file_size    BIGINT,
    file_hash    TEXT,
    needs_upload BIGINT NOT NULL,
    PRIMARY KEY (pending_id, key)
);
CREATE INDEX pending_objects_key ON pending_objects (key);

-- Open multipart uploads, so abandoned ones can be aborted.
CREATE TABLE multipart_uploads (
    upload_id  TEXT PRIMARY KEY,
    key        TEXT NOT NULL,
    pending_id BIGINT NOT NULL REFERENCES pending_closures (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX multipart_uploads_key ON multipart_uploads (key);

-- Named GC roots that never expire.
CREATE TABLE pins (
    name        TEXT PRIMARY KEY,
    store_path  TEXT NOT NULL,
    narinfo_key TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

-- Single-row counters and leases (GC epoch; run locks on SQLite).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO meta (name, value) VALUES ('gc_epoch', 1);
