//! The collector's database side: run lock, root expiry, epoch switch, mark, sweep.
//! The protocol and why it is safe against concurrent pushes: docs/gc.md.

use sqlx::{Any, Row, Transaction};

use super::pending::{placeholders, GC_LOCK_ID};
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// A candidate for deletion: key and stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// Object key.
    pub key: String,
    /// Bytes it occupies (file size, else NAR size, else 0).
    pub size: i64,
}

/// Deletes roots last pushed before `cutoff` (Unix ms) unless pinned; returns how many.
/// With `dry_run`, only counts them.
pub async fn expire_roots(db: &Db, cutoff: i64, dry_run: bool) -> Result<u64, DbError> {
    const OLD: &str = "FROM closures WHERE updated_at < $1 \
                       AND key NOT IN (SELECT narinfo_key FROM pins)";
    if dry_run {
        let count: i64 = sqlx::query(trusted_sql(format!("SELECT COUNT(*) {OLD}")))
            .bind(cutoff)
            .fetch_one(db.pool())
            .await
            .and_then(|r| r.try_get(0))
            .context("count old roots")?;
        return Ok(u64::try_from(count).unwrap_or(0));
    }
    let done = sqlx::query(trusted_sql(format!("DELETE {OLD}")))
        .bind(cutoff)
        .execute(db.pool())
        .await
        .context("expire old roots")?;
    Ok(done.rows_affected())
}

/// Starts a new GC epoch with no push transaction in flight; returns it.
pub async fn next_epoch(db: &Db) -> Result<i64, DbError> {
    let mut tx = db.pool().begin().await.context("begin the epoch switch")?;
    if db.backend() == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(GC_LOCK_ID)
            .execute(&mut *tx)
            .await
            .context("take the exclusive GC lock")?;
    }
    sqlx::query("UPDATE meta SET value = value + 1 WHERE name = 'gc_epoch'")
        .execute(&mut *tx)
        .await
        .context("advance the GC epoch")?;
    let epoch: i64 = sqlx::query("SELECT value FROM meta WHERE name = 'gc_epoch'")
        .fetch_one(&mut *tx)
        .await
        .and_then(|row| row.try_get(0))
        .context("read the GC epoch")?;
    tx.commit().await.context("commit the epoch switch")?;
    Ok(epoch)
}

/// Marks, with `epoch`, every object not reachable from a root pushed since
/// `root_cutoff`, a pin or a pending session, and not touched in this epoch. With
/// `dry_run`, only counts them. Returns how many objects (and bytes) that is.
pub async fn mark(
    db: &Db,
    epoch: i64,
    root_cutoff: i64,
    now: i64,
    dry_run: bool,
) -> Result<(u64, i64), DbError> {
    // Roots older than the cutoff are already deleted in a real run; a dry run keeps
    // them, so the cutoff appears here too.
    const LIVE: &str = "WITH RECURSIVE live(key) AS ( \
            SELECT key FROM closures WHERE updated_at >= $2 \
            UNION SELECT narinfo_key FROM pins \
            UNION SELECT key FROM pending_objects \
            UNION SELECT r.to_key FROM refs r JOIN live l ON r.from_key = l.key) ";
    const DEAD: &str = "marked_epoch IS NULL AND touched_epoch < $1 \
                        AND key NOT IN (SELECT key FROM live)";
    let counted = sqlx::query(trusted_sql(format!(
        "{LIVE} SELECT COUNT(*), CAST(COALESCE(SUM(COALESCE(file_size, nar_size, 0)), 0) AS BIGINT) \
         FROM objects WHERE {DEAD}"
    )))
    .bind(epoch)
    .bind(root_cutoff)
    .fetch_one(db.pool())
    .await
    .context("count unreachable objects")?;
    let count: i64 = counted.try_get(0).context("decode count")?;
    let bytes: i64 = counted.try_get(1).context("decode bytes")?;
    if !dry_run {
        sqlx::query(trusted_sql(format!(
            "{LIVE} UPDATE objects SET marked_epoch = $1, marked_at = $3 WHERE {DEAD}"
        )))
        .bind(epoch)
        .bind(root_cutoff)
        .bind(now)
        .execute(db.pool())
        .await
        .context("mark unreachable objects")?;
    }
    Ok((u64::try_from(count).unwrap_or(0), bytes))
}

/// Up to `limit` marked objects past the grace period (`marked_at <= cutoff`) after `after`.
pub async fn sweep_candidates(
    db: &Db,
    cutoff: i64,
    after: &str,
    limit: i64,
) -> Result<Vec<String>, DbError> {
    let rows = sqlx::query(
        "SELECT key FROM objects WHERE marked_epoch IS NOT NULL AND marked_at <= $1 \
         AND key > $2 ORDER BY key LIMIT $3",
    )
    .bind(cutoff)
    .bind(after)
    .bind(limit)
    .fetch_all(db.pool())
    .await
    .context("find objects to sweep")?;
    rows.iter()
        .map(|r| r.try_get(0))
        .collect::<Result<_, _>>()
        .context("decode sweep candidates")
}

/// A sweep batch in progress: rows locked and re-checked, waiting for the bucket.
#[derive(Debug)]
pub struct SweepBatch {
    tx: Transaction<'static, Any>,
    /// The objects confirmed for deletion, sorted by key.
    pub doomed: Vec<Doomed>,
}

/// Locks `keys` and keeps those that are still safe to delete: marked, past grace, not
/// touched since their mark, in no pending session. The caller deletes them from the
/// bucket, then [`SweepBatch::commit`]s (or drops the batch to keep them).
pub async fn begin_sweep(db: &Db, keys: &[String], cutoff: i64) -> Result<SweepBatch, DbError> {
    let mut tx = db.pool().begin().await.context("begin a sweep batch")?;
    if db.backend() == Backend::Sqlite {
        sqlx::query("UPDATE meta SET value = value WHERE name = 'gc_epoch'")
            .execute(&mut *tx)
            .await
            .context("take the SQLite write lock")?;
    }
    let lock = if db.backend() == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let sql = format!(
        "SELECT key, COALESCE(file_size, nar_size, 0) FROM objects WHERE key IN ({}) \
         AND marked_epoch IS NOT NULL AND marked_at <= $1 AND touched_epoch < marked_epoch \
         AND NOT EXISTS (SELECT 1 FROM pending_objects p WHERE p.key = objects.key) \
         ORDER BY key{lock}",
        placeholders(2, keys.len())
    );
    let mut query = sqlx::query(trusted_sql(sql)).bind(cutoff);
    for key in keys {
        query = query.bind(key.as_str());
    }
    let doomed = query
        .fetch_all(&mut *tx)
        .await
        .context("re-check objects to sweep")?
        .iter()
        .map(|r| {
            Ok(Doomed {
                key: r.try_get(0)?,
                size: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .context("decode objects to sweep")?;
    Ok(SweepBatch { tx, doomed })
}

impl SweepBatch {
    /// Deletes the rows of `deleted` (those the bucket no longer holds) and commits.
    pub async fn commit(mut self, deleted: &[String]) -> Result<(), DbError> {
        super::journal::record_sweep(&mut self.tx, deleted, super::now_ms()).await?;
        if !deleted.is_empty() {
            let list = placeholders(1, deleted.len());
            for sql in [
                format!("DELETE FROM refs WHERE from_key IN ({list})"),
                format!("DELETE FROM objects WHERE key IN ({list})"),
            ] {
                let mut query = sqlx::query(trusted_sql(sql));
                for key in deleted {
                    query = query.bind(key.as_str());
                }
                query
                    .execute(&mut *self.tx)
                    .await
                    .context("delete swept rows")?;
            }
        }
        self.tx.commit().await.context("commit a sweep batch")
    }
}
