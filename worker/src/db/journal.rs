//! The index journal in the database: `+`/`-` changes recorded by the transactions that
//! make them true, and what the journal publisher reads, assigns and keeps.
//!
//! Rows are written without a segment; a publisher (under [`JOURNAL_LOCK_ID`]) assigns
//! every committed unassigned row to the segment it is writing. A `-` can only be written
//! after the `+` of the same narinfo committed (the sweep reads the committed row), so its
//! id is larger and it is never assigned to an earlier segment: ordering by (segment, id)
//! keeps every narinfo's changes in the order they happened. docs/index.md has the rest.

use sqlx::{Any, Row, Transaction};

use super::pending::placeholders;
use super::{trusted_sql, Backend, Db, DbError, QueryContext};
use crate::nix::base32::char_value;

/// Advisory lock id of the journal writer, taken by publishers and by the index build's
/// manifest switch (they write the same files).
pub const JOURNAL_LOCK_ID: i64 = 0x6c61_7264_6572_6a6c; // "larderjl"

/// Rows per multi-row insert: well under both engines' parameter limits.
const CHUNK: usize = 300;

/// The hash part a narinfo key (`<hash>.narinfo`) names; `None` for any other key.
pub fn narinfo_hash(key: &str) -> Option<&str> {
    let hash = key.strip_suffix(".narinfo")?;
    let valid = hash.len() == 32 && hash.bytes().all(|b| char_value(b).is_some());
    valid.then_some(hash)
}

/// Records `+` for every narinfo session `pending_id` uploaded (one the cache lacked, or
/// one GC had marked). Call inside the commit's transaction, before the session's rows go.
pub async fn record_commit(
    tx: &mut Transaction<'_, Any>,
    pending_id: i64,
    now: i64,
) -> Result<u64, DbError> {
    // Narinfos present and unmarked when the session started are in the index already:
    // the push relied on them, so GC could not have deleted them since.
    let done = sqlx::query(
        "INSERT INTO index_journal (op, hash, created_at) \
         SELECT '+', substr(key, 1, 32), $2 FROM pending_objects \
         WHERE pending_id = $1 AND kind = 0 AND needs_upload = 1 ORDER BY key",
    )
    .bind(pending_id)
    .bind(now)
    .execute(&mut **tx)
    .await
    .context("journal the committed narinfos")?;
    Ok(done.rows_affected())
}

/// Records `-` for every narinfo among `deleted`. Call inside the sweep's transaction.
pub async fn record_sweep(
    tx: &mut Transaction<'_, Any>,
    deleted: &[String],
    now: i64,
) -> Result<u64, DbError> {
    let hashes: Vec<&str> = deleted.iter().filter_map(|k| narinfo_hash(k)).collect();
    insert(tx, '-', &hashes, now).await
}

/// Inserts one `op` row per hash, in the order given.
pub(crate) async fn insert(
    tx: &mut Transaction<'_, Any>,
    op: char,
    hashes: &[&str],
    now: i64,
) -> Result<u64, DbError> {
    let mut total = 0;
    for chunk in hashes.chunks(CHUNK) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("($1, ${}, $2)", i + 3))
            .collect();
        let sql = format!(
            "INSERT INTO index_journal (op, hash, created_at) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(trusted_sql(sql)).bind(op.to_string()).bind(now);
        for hash in chunk {
            query = query.bind(*hash);
        }
        total += query
            .execute(&mut **tx)
            .await
            .context("journal changes")?
            .rows_affected();
    }
    Ok(total)
}

/// One change as stored: `+` or `-`, and a hash part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalRow {
    /// `+` or `-`.
    pub op: String,
    /// The 32-character hash part.
    pub hash: String,
}

fn rows(found: Vec<sqlx::any::AnyRow>) -> Result<Vec<JournalRow>, DbError> {
    found
        .iter()
        .map(|r| {
            Ok(JournalRow {
                op: r.try_get(0)?,
                hash: r.try_get(1)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("decode journal rows")
}

/// Begins a transaction holding the journal writer's lock. With `wait` false, answers
/// `None` at once when another worker holds it.
pub async fn begin_locked(
    db: &Db,
    wait: bool,
) -> Result<Option<Transaction<'static, Any>>, DbError> {
    let mut tx = db.pool().begin().await.context("begin a journal write")?;
    match db.backend() {
        Backend::Postgres if wait => {
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(JOURNAL_LOCK_ID)
                .execute(&mut *tx)
                .await
                .context("take the journal lock")?;
        }
        Backend::Postgres => {
            let got: bool = sqlx::query("SELECT pg_try_advisory_xact_lock($1)")
                .bind(JOURNAL_LOCK_ID)
                .fetch_one(&mut *tx)
                .await
                .and_then(|r| r.try_get(0))
                .context("try the journal lock")?;
            if !got {
                return Ok(None);
            }
        }
        Backend::Sqlite => {
            // SQLite has one writer: taking its write lock now is the journal lock.
            sqlx::query("UPDATE meta SET value = value WHERE name = 'index_writer_segment'")
                .execute(&mut *tx)
                .await
                .context("take the SQLite write lock")?;
        }
    }
    Ok(Some(tx))
}

/// Assigns up to `limit` unassigned rows, oldest first, to `segment`; returns them.
pub async fn assign(
    tx: &mut Transaction<'_, Any>,
    segment: i64,
    limit: i64,
) -> Result<Vec<JournalRow>, DbError> {
    let found = sqlx::query(
        "UPDATE index_journal SET segment = $1 WHERE id IN \
         (SELECT id FROM index_journal WHERE segment IS NULL ORDER BY id LIMIT $2) \
         RETURNING op, hash",
    )
    .bind(segment)
    .bind(limit)
    .fetch_all(&mut **tx)
    .await
    .context("assign journal rows to a segment")?;
    rows(found)
}

/// Every row of `segment`, oldest first.
pub async fn segment_rows(
    tx: &mut Transaction<'_, Any>,
    segment: i64,
) -> Result<Vec<JournalRow>, DbError> {
    let found = sqlx::query("SELECT op, hash FROM index_journal WHERE segment = $1 ORDER BY id")
        .bind(segment)
        .fetch_all(&mut **tx)
        .await
        .context("read a journal segment")?;
    rows(found)
}

/// Hash parts of every `+` in segments from `floor` on, or not yet assigned.
pub async fn added_since(
    tx: &mut Transaction<'_, Any>,
    floor: i64,
) -> Result<Vec<String>, DbError> {
    sqlx::query(
        "SELECT hash FROM index_journal WHERE op = '+' AND (segment IS NULL OR segment >= $1)",
    )
    .bind(floor)
    .fetch_all(&mut **tx)
    .await
    .context("read recent additions")?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()
    .context("decode recent additions")
}

/// Forgets rows of segments before `segment` (no client reads them any more).
pub async fn delete_before(db: &Db, segment: i64) -> Result<u64, DbError> {
    let done = sqlx::query("DELETE FROM index_journal WHERE segment < $1")
        .bind(segment)
        .execute(db.pool())
        .await
        .context("forget old journal rows")?;
    Ok(done.rows_affected())
}

/// Where the journal writer is, kept in `meta` (all Unix seconds, 0 = never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterState {
    /// The segment new rows are assigned to.
    pub writer_segment: i64,
    /// The segment the published manifest names as current.
    pub manifest_segment: i64,
    /// When the manifest started naming it.
    pub manifest_at: i64,
}

const STATE_KEYS: [&str; 3] = [
    "index_writer_segment",
    "index_manifest_segment",
    "index_manifest_at",
];

/// Reads the writer's state.
pub async fn writer_state(tx: &mut Transaction<'static, Any>) -> Result<WriterState, DbError> {
    let sql = format!(
        "SELECT name, value FROM meta WHERE name IN ({})",
        placeholders(1, STATE_KEYS.len())
    );
    let mut query = sqlx::query(trusted_sql(sql));
    for key in STATE_KEYS {
        query = query.bind(key);
    }
    let mut state = WriterState::default();
    for row in query
        .fetch_all(&mut **tx)
        .await
        .context("read the journal writer state")?
    {
        let name: String = row.try_get(0).context("decode meta name")?;
        let value: i64 = row.try_get(1).context("decode meta value")?;
        match name.as_str() {
            "index_writer_segment" => state.writer_segment = value,
            "index_manifest_segment" => state.manifest_segment = value,
            _ => state.manifest_at = value,
        }
    }
    Ok(state)
}

/// Stores the writer's state.
pub async fn set_writer_state(
    tx: &mut Transaction<'_, Any>,
    state: &WriterState,
) -> Result<(), DbError> {
    let values = [
        state.writer_segment,
        state.manifest_segment,
        state.manifest_at,
    ];
    for (name, value) in STATE_KEYS.iter().zip(values) {
        sqlx::query(
            "INSERT INTO meta (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
        )
        .bind(*name)
        .bind(value)
        .execute(&mut **tx)
        .await
        .context("store the journal writer state")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_narinfo_keys_name_a_hash() {
        let h = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
        assert_eq!(narinfo_hash(&format!("{h}.narinfo")), Some(h));
        for other in [
            format!("{h}.ls"),
            format!("nar/{h}.nar.zst"),
            format!("{}.narinfo", &h[1..]),
            format!("{}e.narinfo", &h[1..]),
            format!("x/{h}.narinfo"),
            ".narinfo".to_string(),
        ] {
            assert_eq!(narinfo_hash(&other), None, "{other}");
        }
    }
}
