//! Upload sessions: starting, signing checks, committing, multipart bookkeeping.
//!
//! Every transaction here that relies on objects being present holds PostgreSQL's GC
//! advisory lock in shared mode and row-locks those objects in key order, then stamps
//! the unmarked ones with the current GC epoch (`complete` also clears marks, once the
//! bytes are verified). See docs/gc.md for why that is enough for the collector never to
//! delete what a push relies on.

use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// Advisory lock id shared by pushes (shared) and the GC epoch switch (exclusive).
pub const GC_LOCK_ID: i64 = 0x6c61_7264_6572_6763; // "lardergc"

/// Rows per multi-row statement on PostgreSQL: well under its parameter limit.
pub(crate) const CHUNK: usize = 500;

/// Parameters per statement on SQLite. sqlx looks each parameter up by a linear search
/// of the statement's parameter names, so a statement of n parameters costs n² there
/// (4,000 made binding most of a push's database time); a few hundred keep it small.
const SQLITE_PARAMS: usize = 256;

/// Rows per multi-row statement of `columns` parameters each on `backend`.
pub(crate) fn chunk_rows(backend: Backend, columns: usize) -> usize {
    match backend {
        Backend::Postgres => CHUNK,
        Backend::Sqlite => (SQLITE_PARAMS / columns.max(1)).max(1),
    }
}

/// One object of a closure as the client declared it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosureObject {
    /// Object key (already validated).
    pub key: String,
    /// Object kind code (see `upload::kind_code`).
    pub kind: i64,
    /// Keys this object references.
    pub refs: Vec<String>,
    /// Uncompressed NAR size, for NARs.
    pub nar_size: Option<i64>,
    /// Size of the stored file, when the client declared it.
    pub file_size: Option<i64>,
    /// `sha256:<base32>` of the stored file, when the client declared it.
    pub file_hash: Option<String>,
}

/// What starting an upload session decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    /// Session id.
    pub id: i64,
    /// Start time (Unix ms).
    pub started_at: i64,
    /// Keys the client must upload (absent, or marked by GC and so not to be trusted).
    pub needs_upload: Vec<String>,
}

/// A pending object as stored, for signing and committing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingObject {
    /// Object key.
    pub key: String,
    /// Object kind code.
    pub kind: i64,
    /// Whether the client had to upload it.
    pub needs_upload: bool,
}

/// Begins a transaction that relies on objects being present: shared GC lock (PostgreSQL)
/// or the write lock (SQLite); returns it with the current GC epoch.
pub(crate) async fn begin_push(db: &Db) -> Result<(Transaction<'static, Any>, i64), DbError> {
    let mut tx = db
        .pool()
        .begin()
        .await
        .context("begin a push transaction")?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock_shared($1)")
            .bind(GC_LOCK_ID)
            .execute(&mut *tx)
            .await
            .context("take the shared GC lock")?;
    } else {
        sqlite_write_lock(&mut tx).await?;
    }
    let epoch: i64 = sqlx::query("SELECT value FROM meta WHERE name = 'gc_epoch'")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .context("read the GC epoch")?;
    Ok((tx, epoch))
}

/// Takes SQLite's write lock with a first statement that writes, so nothing after it
/// can interleave with another writer: a deferred transaction that reads first fails
/// at its first write, without waiting, once another commit moved past its snapshot
/// (SQLITE_BUSY_SNAPSHOT). The busy timeout makes this statement wait its turn instead.
pub(crate) async fn sqlite_write_lock(tx: &mut Transaction<'static, Any>) -> Result<(), DbError> {
    sqlx::query("UPDATE meta SET value = value WHERE name = 'gc_epoch'")
        .execute(&mut **tx)
        .await
        .context("take the SQLite write lock")?;
    Ok(())
}

/// `$first, $first+1, …` for `n` parameters.
pub(crate) fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Locks the present objects among `sorted_keys`, stamps the unmarked ones as relied on,
/// and returns them (present and not marked by GC: the only ones a push may skip).
pub(crate) async fn touch_present(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    sorted_keys: &[&str],
    epoch: i64,
    now: i64,
) -> Result<std::collections::HashSet<String>, DbError> {
    if backend == Backend::Postgres {
        return touch_present_pg(tx, sorted_keys, epoch, now).await;
    }
    let mut trusted = std::collections::HashSet::new();
    for chunk in sorted_keys.chunks(chunk_rows(backend, 1)) {
        let sql = format!(
            "SELECT key, marked_epoch FROM objects WHERE key IN ({})",
            placeholders(1, chunk.len())
        );
        let mut query = sqlx::query(trusted_sql(sql));
        for key in chunk {
            query = query.bind(*key);
        }
        let rows: Vec<AnyRow> = query
            .fetch_all(&mut **tx)
            .await
            .context("find present objects")?;
        collect_trusted(&rows, &mut trusted)?;
        // Only unmarked rows are stamped. A marked row may have lost its bytes to a sweep
        // that crashed before deleting rows; the client uploads it again, the session's
        // pending row keeps the sweep away meanwhile, and `complete` clears the mark once
        // the bytes are verified. Clearing it here would let a later push trust an object
        // an abandoned session never re-uploaded.
        let sql = format!(
            "UPDATE objects SET touched_at = $1, touched_epoch = $2 \
             WHERE marked_epoch IS NULL AND key IN ({})",
            placeholders(3, chunk.len())
        );
        let mut query = sqlx::query(trusted_sql(sql)).bind(now).bind(epoch);
        for key in chunk {
            query = query.bind(*key);
        }
        query
            .execute(&mut **tx)
            .await
            .context("stamp present objects")?;
    }
    Ok(trusted)
}

/// [`touch_present`] on PostgreSQL: the keys travel as one JSON array, so a closure of
/// any size costs two statements instead of two per 500 keys (a 10,000-object session
/// spent most of its database time parsing and planning 4,000-parameter statements).
/// Rows are locked in key order, as everywhere else, so pushes cannot deadlock.
async fn touch_present_pg(
    tx: &mut Transaction<'static, Any>,
    sorted_keys: &[&str],
    epoch: i64,
    now: i64,
) -> Result<std::collections::HashSet<String>, DbError> {
    let keys = serde_json::to_string(sorted_keys).unwrap_or_else(|_| "[]".into());
    let rows: Vec<AnyRow> = sqlx::query(
        "SELECT key, marked_epoch FROM objects \
         WHERE key IN (SELECT json_array_elements_text($1::json)) ORDER BY key FOR UPDATE",
    )
    .bind(&keys)
    .fetch_all(&mut **tx)
    .await
    .context("find present objects")?;
    let mut trusted = std::collections::HashSet::new();
    collect_trusted(&rows, &mut trusted)?;
    // As on SQLite, only unmarked rows are stamped (see `touch_present`).
    if !rows.is_empty() {
        sqlx::query(
            "UPDATE objects SET touched_at = $1, touched_epoch = $2 \
             WHERE marked_epoch IS NULL AND key IN (SELECT json_array_elements_text($3::json))",
        )
        .bind(now)
        .bind(epoch)
        .bind(&keys)
        .execute(&mut **tx)
        .await
        .context("stamp present objects")?;
    }
    Ok(trusted)
}

/// Adds the keys of `(key, marked_epoch)` rows that GC has not marked.
fn collect_trusted(
    rows: &[AnyRow],
    trusted: &mut std::collections::HashSet<String>,
) -> Result<(), DbError> {
    for row in rows {
        let key: String = row.try_get(0).context("decode object key")?;
        let marked: Option<i64> = row.try_get(1).context("decode object mark")?;
        if marked.is_none() {
            trusted.insert(key);
        }
    }
    Ok(())
}

/// Starts an upload session for `closure_key` with every object of the closure.
pub async fn start(
    db: &Db,
    closure_key: &str,
    objects: &[ClosureObject],
    now: i64,
) -> Result<Started, DbError> {
    let mut starting = super::pending_start::begin(db, closure_key, objects, now).await?;
    starting.record().await?;
    starting.commit(&[]).await
}

/// The references a `pending_objects.refs` column holds for object `key`. The column is
/// written by `pending_start` from a validated list; a value that does not parse is
/// refused, never read as "no references", which would let GC collect what it reaches.
pub(crate) fn decode_refs(key: &str, json: &str) -> Result<Vec<String>, DbError> {
    serde_json::from_str(json).map_err(|e| DbError::Corrupt {
        what: format!("references of pending object {key}"),
        reason: e.to_string(),
    })
}

/// The open upload sessions, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenSessions {
    /// How many.
    pub count: i64,
    /// Start of the oldest (Unix ms), if any.
    pub oldest_started_ms: Option<i64>,
}

/// Counts the open upload sessions (an index-only read of a small table).
pub async fn open_sessions(db: &Db) -> Result<OpenSessions, DbError> {
    let row = sqlx::query("SELECT COUNT(*), MIN(started_at) FROM pending_closures")
        .fetch_one(db.pool())
        .await
        .context("count open upload sessions")?;
    Ok(OpenSessions {
        count: row.try_get(0).context("decode the session count")?,
        oldest_started_ms: row.try_get(1).context("decode the oldest session start")?,
    })
}

/// Whether session `id` is pending (neither committed nor cleaned up).
pub(crate) async fn session_exists<'e, E>(executor: E, id: i64) -> Result<bool, DbError>
where
    E: sqlx::Executor<'e, Database = Any>,
{
    let row = sqlx::query("SELECT 1 FROM pending_closures WHERE id = $1")
        .bind(id)
        .fetch_optional(executor)
        .await
        .context("look up the pending closure")?;
    Ok(row.is_some())
}

/// Every pending object of session `id`, sorted by key; `None` when there is no such session.
pub async fn objects(db: &Db, id: i64) -> Result<Option<Vec<PendingObject>>, DbError> {
    if !session_exists(db.pool(), id).await? {
        return Ok(None);
    }
    let rows = sqlx::query(
        "SELECT key, kind, needs_upload FROM pending_objects WHERE pending_id = $1 ORDER BY key",
    )
    .bind(id)
    .fetch_all(db.pool())
    .await
    .context("list pending objects")?;
    rows.iter()
        .map(|row| {
            Ok(PendingObject {
                key: row.try_get(0)?,
                kind: row.try_get(1)?,
                needs_upload: row.try_get::<i64, _>(2)? != 0,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .context("decode pending objects")
        .map(Some)
}

pub use super::pending_commit::{complete, was_committed, Committed};

/// Whether `upload_id` is an open multipart upload of `key`.
pub async fn multipart_exists(db: &Db, upload_id: &str, key: &str) -> Result<bool, DbError> {
    let row = sqlx::query("SELECT 1 FROM multipart_uploads WHERE upload_id = $1 AND key = $2")
        .bind(upload_id)
        .bind(key)
        .fetch_optional(db.pool())
        .await
        .context("look up a multipart upload")?;
    Ok(row.is_some())
}

/// Forgets every open multipart upload of `key`, returning their ids (the caller aborts
/// the others in storage after completing one).
pub async fn take_multiparts_of_key(db: &Db, key: &str) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query("DELETE FROM multipart_uploads WHERE key = $1 RETURNING upload_id")
        .bind(key)
        .fetch_all(db.pool())
        .await
        .context("remove multipart uploads")?;
    rows.iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .context("decode upload ids")
}

/// Deletes sessions started before `cutoff` (Unix ms), returning their open multipart
/// uploads as (key, upload_id) for the caller to abort, and how many sessions went.
/// Objects they uploaded without committing become marked rows for the sweep.
pub async fn delete_started_before(
    db: &Db,
    cutoff: i64,
    now: i64,
) -> Result<(u64, Vec<(String, String)>), DbError> {
    let mut tx = db
        .pool()
        .begin()
        .await
        .context("begin stale session cleanup")?;
    if db.backend() == Backend::Postgres {
        // Lock the sessions first, in the order `complete` does (session row, then
        // objects): the tombstone insert below takes object keys, and a `complete` of a
        // stale session running at this moment would otherwise deadlock with us.
        sqlx::query("SELECT id FROM pending_closures WHERE started_at < $1 ORDER BY id FOR UPDATE")
            .bind(cutoff)
            .fetch_all(&mut *tx)
            .await
            .context("lock stale sessions")?;
    } else {
        sqlite_write_lock(&mut tx).await?;
    }
    let uploads = sqlx::query(
        "SELECT m.key, m.upload_id FROM multipart_uploads m \
         JOIN pending_closures p ON p.id = m.pending_id WHERE p.started_at < $1",
    )
    .bind(cutoff)
    .fetch_all(&mut *tx)
    .await
    .context("find stale multipart uploads")?
    .iter()
    .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
    .collect::<Result<Vec<_>, sqlx::Error>>()
    .context("decode stale multipart uploads")?;
    // What these sessions may have uploaded but never committed is recorded as already
    // marked, so the sweep removes it from the bucket under the same row locks and
    // re-checks as any other garbage: a push that wants one of these keys now either
    // stamps the row (clearing the mark) or waits for the sweep and uploads anew.
    sqlx::query(
        "INSERT INTO objects (key, kind, file_size, created_at, touched_at, touched_epoch, \
         marked_epoch, marked_at) \
         SELECT po.key, MIN(po.kind), MAX(po.file_size), $2, $2, 0, \
         (SELECT value FROM meta WHERE name = 'gc_epoch'), MIN(p.started_at) \
         FROM pending_objects po JOIN pending_closures p ON p.id = po.pending_id \
         WHERE p.started_at < $1 AND po.needs_upload = 1 \
         AND NOT EXISTS (SELECT 1 FROM objects o WHERE o.key = po.key) \
         GROUP BY po.key ON CONFLICT (key) DO NOTHING",
    )
    .bind(cutoff)
    .bind(now)
    .execute(&mut *tx)
    .await
    .context("record uploads of stale sessions for the sweep")?;
    let deleted = sqlx::query("DELETE FROM pending_closures WHERE started_at < $1")
        .bind(cutoff)
        .execute(&mut *tx)
        .await
        .context("delete stale sessions")?
        .rows_affected();
    tx.commit().await.context("commit stale session cleanup")?;
    Ok((deleted, uploads))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stale-session cleanup of a GC run never fails beside pushes on SQLite with
    /// "database is locked" (SQLITE_BUSY_SNAPSHOT: a transaction that read first cannot
    /// become a writer once a push committed past its snapshot).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    #[allow(clippy::unwrap_used)] // test code
    async fn stale_session_cleanup_beside_pushes_on_sqlite_never_fails() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("larder.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let pushes: Vec<_> = (0..4)
            .map(|p| {
                let db = db.clone();
                tokio::spawn(async move {
                    for i in 0..40 {
                        let key = format!("{p:02}{i:02}{}.narinfo", "0".repeat(28));
                        let object = ClosureObject {
                            key: key.clone(),
                            kind: 0,
                            refs: Vec::new(),
                            nar_size: None,
                            file_size: None,
                            file_hash: None,
                        };
                        start(&db, &key, &[object], 1).await.unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..40 {
            let cleaned = delete_started_before(&db, 0, 2).await;
            assert!(cleaned.is_ok(), "{cleaned:?}");
        }
        for push in pushes {
            push.await.unwrap();
        }
    }

    #[test]
    fn references_that_do_not_parse_are_refused_not_emptied() {
        assert_eq!(decode_refs("k", r#"["a","b"]"#).unwrap(), ["a", "b"]);
        assert!(decode_refs("k", "[]").unwrap().is_empty());
        let err = decode_refs("x.narinfo", "not json").unwrap_err();
        assert!(err.to_string().contains("x.narinfo"), "{err}");
    }
}
