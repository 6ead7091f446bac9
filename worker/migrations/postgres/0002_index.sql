-- The binary cache index (docs/index.md): the journal of changes and the epochs built.

-- One change per row, written in the transaction that makes it true: '+' when a commit
-- adds a narinfo, '-' when the sweep deletes one. `segment` is NULL until a publisher
-- writes the row into that journal segment; ids order the rows within a segment.
CREATE TABLE index_journal (
    id         BIGSERIAL PRIMARY KEY,
    op         TEXT NOT NULL,                 -- '+' or '-'
    hash       TEXT NOT NULL,                 -- the narinfo's 32-character hash part
    created_at BIGINT NOT NULL,
    segment    BIGINT
);
CREATE INDEX index_journal_unpublished ON index_journal (id) WHERE segment IS NULL;
CREATE INDEX index_journal_segment ON index_journal (segment);

-- The build reads narinfo keys in byte order ("C"), whatever the database's collation:
-- this index hands them over without sorting 10 million rows.
CREATE INDEX objects_narinfo_keys ON objects (key COLLATE "C") WHERE kind = 0;

-- Epochs of shards `larder index build` wrote, and what their manifest needs.
CREATE TABLE index_epochs (
    epoch              BIGINT PRIMARY KEY,
    depth              BIGINT NOT NULL,
    item_count         BIGINT NOT NULL DEFAULT 0,
    encoding_parameter BIGINT NOT NULL DEFAULT 0,
    journal_floor      BIGINT NOT NULL,       -- writer segment before the snapshot was read
    deltas_from        BIGINT,                -- epoch the deltas start from (NULL: none)
    started_at         BIGINT NOT NULL,
    published_at       BIGINT,                -- manifest switched to it (NULL: unfinished)
    retired_at         BIGINT                 -- older than `previous` (or abandoned) since
);

-- The journal writer's segment, the segment the manifest names, and when it switched.
INSERT INTO meta (name, value) VALUES
    ('index_writer_segment', 0), ('index_manifest_segment', 0), ('index_manifest_at', 0);
