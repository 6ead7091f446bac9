//! The collector's database side: run lock, root expiry, epoch switch, mark, sweep.
//! The protocol and why it is safe against concurrent pushes: docs/gc.md.

use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};

use super::pending::GC_LOCK_ID;
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

pub use super::gc_sweep::{start_sweep, Doomed, SweepBatch, Sweeper};

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
    let backend = db.backend();
    let mut conn = gc_connection(db).await?;
    let conn: &mut AnyConnection = &mut conn;
    if backend == Backend::Postgres {
        // The live set's table (1.5 million hashes at a million store paths) and the
        // anti-join's hash table stay in memory: that memory belongs to one PostgreSQL
        // backend, for the length of the mark. temp_buffers only takes before the
        // session's first temporary table (this connection is a fresh one).
        for sql in ["SET work_mem = '64MB'", "SET temp_buffers = '128MB'"] {
            let _ = sqlx::query(sql).execute(&mut *conn).await;
        }
    }
    super::gc_live::build(conn, backend, root_cutoff).await?;
    // Objects whose keys (on PostgreSQL: whose keys' hashes) are not in the live set.
    // Only objects last touched in an older epoch qualify: a push since the epoch switch
    // stamped what it relies on, and a push stamping a row while this runs makes
    // PostgreSQL re-check that row.
    let dead = match backend {
        Backend::Postgres => {
            "marked_epoch IS NULL AND touched_epoch < $1 AND NOT EXISTS (SELECT 1 FROM gc_live l \
             WHERE l.h = hashtextextended(objects.key, 0))"
        }
        Backend::Sqlite => {
            "marked_epoch IS NULL AND touched_epoch < $1 \
             AND NOT EXISTS (SELECT 1 FROM gc_live l WHERE l.key = objects.key)"
        }
    };
    const SIZE: &str = "COALESCE(file_size, nar_size, 0)";
    let counted = if dry_run {
        sqlx::query(trusted_sql(format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM({SIZE}), 0) AS BIGINT) FROM objects WHERE {dead}"
        )))
        .bind(epoch)
        .fetch_one(&mut *conn)
        .await
        .context("count unreachable objects")?
    } else if backend == Backend::Postgres {
        // One pass: the update reports the sizes of what it marked. No index covers the
        // mark columns (migration 0003), so with room on the page (the table's fill
        // factor) PostgreSQL rewrites each row in place instead of adding index entries.
        sqlx::query(trusted_sql(format!(
            "WITH marked AS (UPDATE objects SET marked_epoch = $1, marked_at = $2 \
             WHERE {dead} RETURNING {SIZE} AS size) \
             SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM marked"
        )))
        .bind(epoch)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
        .context("mark unreachable objects")?
    } else {
        // SQLite has no UPDATE in a WITH clause. It has one writer at a time and
        // `epoch` is new, so the rows marked with it are exactly these.
        sqlx::query(trusted_sql(format!(
            "UPDATE objects SET marked_epoch = $1, marked_at = $2 WHERE {dead}"
        )))
        .bind(epoch)
        .bind(now)
        .execute(&mut *conn)
        .await
        .context("mark unreachable objects")?;
        sqlx::query(trusted_sql(format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM({SIZE}), 0) AS BIGINT) FROM objects \
             WHERE marked_epoch = $1"
        )))
        .bind(epoch)
        .fetch_one(&mut *conn)
        .await
        .context("count marked objects")?
    };
    let count: i64 = counted.try_get(0).context("decode count")?;
    let bytes: i64 = counted.try_get(1).context("decode bytes")?;
    Ok((u64::try_from(count).unwrap_or(0), bytes))
}

/// A connection of its own for work that keeps temporary tables across statements.
/// It is closed when dropped (even on error) rather than returned to the pool, so its
/// tables never outlive the step.
pub(crate) async fn gc_connection(db: &Db) -> Result<PoolConnection<Any>, DbError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .context("connect for garbage collection")?;
    conn.close_on_drop();
    Ok(conn)
}

