//! The collector's database side: run lock, root expiry, epoch switch, mark, sweep.
//! The protocol and why it is safe against concurrent pushes: docs/gc.md.

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, AnyConnection, Row, Transaction};

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
async fn gc_connection(db: &Db) -> Result<PoolConnection<Any>, DbError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .context("connect for garbage collection")?;
    conn.close_on_drop();
    Ok(conn)
}

/// The objects to consider for deletion, gathered once per sweep: every object marked
/// no later than the grace cutoff, numbered in the order a scan of the table met them
/// (so batches visit the table's pages in order), in the temporary table `gc_sweep`.
///
/// No index covers the mark columns (so that marking rewrites rows in place), hence the
/// one full scan. On PostgreSQL the sweep also notes where each candidate's row and
/// each of its references lie (`ctid`): a batch then reaches its rows page by page
/// instead of descending the primary keys once per key (at a million store paths,
/// deleting 4.8 million references one index probe at a time was most of the sweep).
/// A location is only a way in: every statement that uses one also compares the key, so
/// a row that moved (an update, or a table rewrite by `VACUUM FULL`) is missed, never
/// mistaken for another. Why a missed reference cannot happen: docs/gc.md, rule 4.
#[derive(Debug)]
pub struct Sweeper {
    conn: PoolConnection<Any>,
    backend: Backend,
    cutoff: i64,
    next: i64,
    total: i64,
}

/// Starts a sweep of objects marked no later than `cutoff` (Unix ms).
pub async fn start_sweep(db: &Db, cutoff: i64) -> Result<Sweeper, DbError> {
    let backend = db.backend();
    let mut conn = gc_connection(db).await?;
    let (setup, fill, finish): (&[&'static str], &'static str, &[&'static str]) = match backend {
        Backend::Postgres => (
            &[
                // The candidates' keys are hashed once to find their references: about
                // 1.5 million keys at a million store paths, 150 MB of hash table for
                // this backend while the sweep starts (at 64 MB it spilled 500 MB to
                // temporary files).
                "SET work_mem = '128MB'",
                "DROP TABLE IF EXISTS gc_sweep",
                "DROP TABLE IF EXISTS gc_sweep_refs",
                "DROP TABLE IF EXISTS gc_batch",
                "CREATE TEMP TABLE gc_sweep (n BIGINT NOT NULL, key TEXT NOT NULL, \
                 tid TID NOT NULL)",
                // What one batch locked and kept; emptied by its commit (or rollback).
                "CREATE TEMP TABLE gc_batch (n BIGINT NOT NULL, key TEXT NOT NULL, \
                 tid TID NOT NULL, size BIGINT NOT NULL) ON COMMIT DELETE ROWS",
            ],
            "INSERT INTO gc_sweep (n, key, tid) SELECT ROW_NUMBER() OVER (), key, ctid \
             FROM objects WHERE marked_epoch IS NOT NULL AND marked_at <= $1",
            &[
                "CREATE INDEX gc_sweep_n ON gc_sweep (n)",
                "ANALYZE gc_sweep",
                // Every reference from a candidate, found by one hash join over `refs`
                // (a scan in table order) instead of an index probe per candidate.
                "CREATE TEMP TABLE gc_sweep_refs AS SELECT s.n, r.ctid AS tid \
                 FROM refs r JOIN gc_sweep s ON r.from_key = s.key",
                "CREATE INDEX gc_sweep_refs_n ON gc_sweep_refs (n)",
                "ANALYZE gc_sweep_refs",
            ],
        ),
        Backend::Sqlite => (
            &[
                "DROP TABLE IF EXISTS gc_sweep",
                "CREATE TEMP TABLE gc_sweep (n INTEGER PRIMARY KEY, key TEXT NOT NULL)",
            ],
            "INSERT INTO gc_sweep (n, key) SELECT ROW_NUMBER() OVER (), key FROM objects \
             WHERE marked_epoch IS NOT NULL AND marked_at <= $1",
            &[],
        ),
    };
    for &sql in setup {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("create the sweep tables")?;
    }
    let total = sqlx::query(fill)
        .bind(cutoff)
        .execute(&mut *conn)
        .await
        .context("find objects to sweep")?
        .rows_affected();
    for &sql in finish {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("find the references of objects to sweep")?;
    }
    Ok(Sweeper {
        conn,
        backend,
        cutoff,
        next: 1,
        total: i64::try_from(total).unwrap_or(i64::MAX),
    })
}

/// Candidates of a batch: those numbered `$1` to `$2` in `gc_sweep`.
const BATCH_KEYS: &str = "SELECT key FROM gc_sweep WHERE n >= $1 AND n <= $2";

/// PostgreSQL: locks the candidates numbered `$1` to `$2` that are still marked, past
/// the cutoff `$3` and not touched since their mark, in key order (the order pushes
/// lock rows in, so the two cannot deadlock), and keeps them in `gc_batch`. A row that
/// a push changed while this waited for its lock is re-checked in its new version,
/// whose location is the one kept.
const LOCK_BATCH_PG: &str = "WITH locked AS (\
     SELECT s.n, o.key, o.ctid AS tid, COALESCE(o.file_size, o.nar_size, 0) AS size \
     FROM gc_sweep s JOIN objects o ON o.ctid = s.tid AND o.key = s.key \
     WHERE s.n >= $1 AND s.n <= $2 \
     AND o.marked_epoch IS NOT NULL AND o.marked_at <= $3 \
     AND o.touched_epoch < o.marked_epoch \
     ORDER BY o.key FOR UPDATE OF o) \
     INSERT INTO gc_batch (n, key, tid, size) SELECT n, key, tid, size FROM locked";

impl Sweeper {
    /// How many objects were marked no later than the cutoff when the sweep started.
    pub fn candidates(&self) -> u64 {
        u64::try_from(self.total).unwrap_or(0)
    }

    /// Locks the next (at most `limit`) candidates that are still safe to delete:
    /// marked, past grace, not touched since their mark, in no pending session. The
    /// caller deletes them from the bucket, then [`SweepBatch::commit`]s (or drops the
    /// batch to keep them). `None` when every candidate has been through a batch.
    pub async fn next_batch(&mut self, limit: i64) -> Result<Option<SweepBatch<'_>>, DbError> {
        if self.next > self.total {
            return Ok(None);
        }
        let (first, last) = (self.next, self.next.saturating_add(limit.max(1) - 1));
        self.next = last.saturating_add(1);
        let backend = self.backend;
        let mut tx = self.conn.begin().await.context("begin a sweep batch")?;
        let doomed = match backend {
            Backend::Postgres => lock_batch_pg(&mut tx, first, last, self.cutoff).await?,
            Backend::Sqlite => lock_batch_sqlite(&mut tx, first, last, self.cutoff).await?,
        };
        Ok(Some(SweepBatch {
            tx,
            backend,
            range: (first, last),
            doomed,
        }))
    }
}

fn decode_doomed(rows: &[sqlx::any::AnyRow]) -> Result<Vec<Doomed>, DbError> {
    rows.iter()
        .map(|r| {
            Ok(Doomed {
                key: r.try_get(0)?,
                size: r.try_get(1)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()
        .context("decode objects to sweep")
}

async fn lock_batch_pg(
    tx: &mut Transaction<'_, Any>,
    first: i64,
    last: i64,
    cutoff: i64,
) -> Result<Vec<Doomed>, DbError> {
    sqlx::query(LOCK_BATCH_PG)
        .bind(first)
        .bind(last)
        .bind(cutoff)
        .execute(&mut **tx)
        .await
        .context("lock objects to sweep")?;
    // Pending sessions are looked at only now, with every row of the batch locked, in
    // a snapshot newer than every lock: it sees each session that started before this
    // batch (one that locked a row without changing it — it never stamps a marked row —
    // and committed while this batch waited is invisible to the locking statement's
    // snapshot, and PostgreSQL does not re-check a row that was only locked); later
    // sessions wait for this batch.
    sqlx::query("DELETE FROM gc_batch b USING pending_objects p WHERE p.key = b.key")
        .execute(&mut **tx)
        .await
        .context("re-check pending sessions")?;
    let rows = sqlx::query("SELECT key, size FROM gc_batch ORDER BY n")
        .fetch_all(&mut **tx)
        .await
        .context("read objects to sweep")?;
    decode_doomed(&rows)
}

async fn lock_batch_sqlite(
    tx: &mut Transaction<'_, Any>,
    first: i64,
    last: i64,
    cutoff: i64,
) -> Result<Vec<Doomed>, DbError> {
    // SQLite has one writer: taking the write lock first keeps pushes out of the batch.
    sqlx::query("UPDATE meta SET value = value WHERE name = 'gc_epoch'")
        .execute(&mut **tx)
        .await
        .context("take the SQLite write lock")?;
    let sql = format!(
        "SELECT key, COALESCE(file_size, nar_size, 0) FROM objects \
         WHERE key IN ({BATCH_KEYS}) \
         AND marked_epoch IS NOT NULL AND marked_at <= $3 AND touched_epoch < marked_epoch \
         AND NOT EXISTS (SELECT 1 FROM pending_objects p WHERE p.key = objects.key)"
    );
    let rows = sqlx::query(trusted_sql(sql))
        .bind(first)
        .bind(last)
        .bind(cutoff)
        .fetch_all(&mut **tx)
        .await
        .context("lock objects to sweep")?;
    decode_doomed(&rows)
}

/// A sweep batch in progress: rows locked and re-checked, waiting for the bucket.
#[derive(Debug)]
pub struct SweepBatch<'c> {
    tx: Transaction<'c, Any>,
    backend: Backend,
    /// The candidate numbers the batch covers.
    range: (i64, i64),
    /// The objects confirmed for deletion.
    pub doomed: Vec<Doomed>,
}

impl SweepBatch<'_> {
    /// Deletes the rows of `deleted` (those the bucket no longer holds; a subset of
    /// [`SweepBatch::doomed`]) and commits.
    pub async fn commit(mut self, deleted: &[String]) -> Result<(), DbError> {
        super::journal::record_sweep(&mut self.tx, deleted, super::now_ms()).await?;
        if self.backend == Backend::Postgres {
            return self.commit_pg(deleted).await;
        }
        for chunk in deleted.chunks(DELETE_CHUNK) {
            let list = placeholders(1, chunk.len());
            for sql in [
                format!("DELETE FROM refs WHERE from_key IN ({list})"),
                format!("DELETE FROM objects WHERE key IN ({list})"),
            ] {
                let mut query = sqlx::query(trusted_sql(sql));
                for key in chunk {
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

    async fn commit_pg(mut self, deleted: &[String]) -> Result<(), DbError> {
        if deleted.len() < self.doomed.len() {
            // The bucket kept some: their rows stay (the keys travel as one JSON array,
            // which PostgreSQL plans as a few rows to look up).
            let keep: Vec<&str> = {
                let gone: std::collections::HashSet<&str> =
                    deleted.iter().map(String::as_str).collect();
                self.doomed
                    .iter()
                    .map(|d| d.key.as_str())
                    .filter(|k| !gone.contains(k))
                    .collect()
            };
            let keep = serde_json::to_string(&keep).unwrap_or_else(|_| "[]".into());
            sqlx::query(
                "DELETE FROM gc_batch WHERE key IN (SELECT json_array_elements_text($1::json))",
            )
            .bind(keep)
            .execute(&mut *self.tx)
            .await
            .context("keep objects the bucket kept")?;
        }
        let (first, last) = self.range;
        // By location, and only where the key still matches a locked object.
        sqlx::query(
            "DELETE FROM refs r USING gc_sweep_refs t, gc_batch b \
             WHERE t.n >= $1 AND t.n <= $2 AND b.n = t.n AND r.ctid = t.tid \
             AND r.from_key = b.key",
        )
        .bind(first)
        .bind(last)
        .execute(&mut *self.tx)
        .await
        .context("delete swept references")?;
        sqlx::query(
            "DELETE FROM objects o USING gc_batch b WHERE o.ctid = b.tid AND o.key = b.key",
        )
        .execute(&mut *self.tx)
        .await
        .context("delete swept objects")?;
        self.tx.commit().await.context("commit a sweep batch")
    }
}

/// Keys per row-deleting statement: well under SQLite's limit of bound parameters.
const DELETE_CHUNK: usize = 10_000;
