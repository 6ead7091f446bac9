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
        // The live set and its hash tables fit in memory at a million store paths
        // (about 200 MB at most, for this session only) instead of spilling to disk.
        // temp_buffers only takes before the session's first temporary table; a
        // pooled connection that already had one keeps its setting, which is slower
        // but as correct.
        for sql in ["SET work_mem = '64MB'", "SET temp_buffers = '256MB'"] {
            let _ = sqlx::query(sql).execute(&mut *conn).await;
        }
    }
    live_set(conn, backend, root_cutoff).await?;
    // Objects whose keys are not in the live set. Only objects last touched in an older
    // epoch qualify: a push since the epoch switch stamped what it relies on, and a push
    // stamping a row while this runs makes PostgreSQL re-check that row.
    let dead = match backend {
        Backend::Postgres => {
            "marked_epoch IS NULL AND touched_epoch < $1 AND NOT EXISTS (SELECT 1 FROM gc_live l \
             WHERE l.h = hashtextextended(objects.key, 0) AND l.key = objects.key)"
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

/// Fills the temporary table `gc_live` with every key reachable from a root pushed
/// since `root_cutoff`, a pin or a pending session, breadth first.
///
/// One statement per level of the reference graph adds the keys the previous level
/// references that are not live yet; `depth` tells the levels apart. (A recursive query
/// would keep every visited key in server memory, and PostgreSQL plans its recursive
/// step blind: at a million store paths it hashed all of `refs` on every level.) On
/// PostgreSQL each level is read in key order, so its lookups walk `refs`' index
/// instead of jumping around it, and live keys are indexed by a 64-bit hash first (then
/// the key itself, so collisions cost nothing but a comparison), which compares faster
/// than text in the database's collation.
///
/// Each statement reads its own snapshot, all taken after the epoch switch. References
/// and roots are only removed by the collector itself (one run at a time), so later
/// snapshots can only add keys: whatever a push added meanwhile carries the new epoch
/// and is spared by the mark anyway (docs/gc.md, rule 3).
async fn live_set(
    conn: &mut AnyConnection,
    backend: Backend,
    root_cutoff: i64,
) -> Result<(), DbError> {
    let (table, seed, step) = match backend {
        Backend::Postgres => (
            "CREATE TEMP TABLE gc_live (h BIGINT NOT NULL, key TEXT NOT NULL, \
             depth BIGINT NOT NULL, PRIMARY KEY (h, key))",
            "INSERT INTO gc_live (h, key, depth) SELECT hashtextextended(key, 0), key, 0 FROM (\
             SELECT key FROM closures WHERE updated_at >= $1 \
             UNION SELECT narinfo_key FROM pins UNION SELECT key FROM pending_objects) roots",
            "INSERT INTO gc_live (h, key, depth) SELECT hashtextextended(k, 0), k, $2 FROM (\
             SELECT DISTINCT r.to_key AS k \
             FROM (SELECT key FROM gc_live WHERE depth = $1 ORDER BY key) l \
             JOIN refs r ON r.from_key = l.key) level ON CONFLICT (h, key) DO NOTHING",
        ),
        Backend::Sqlite => (
            "CREATE TEMP TABLE gc_live (key TEXT PRIMARY KEY, depth BIGINT NOT NULL)",
            "INSERT INTO gc_live (key, depth) SELECT key, 0 FROM closures WHERE updated_at >= $1 \
             UNION SELECT narinfo_key, 0 FROM pins UNION SELECT key, 0 FROM pending_objects",
            "INSERT INTO gc_live (key, depth) SELECT DISTINCT r.to_key, $2 \
             FROM gc_live l JOIN refs r ON r.from_key = l.key WHERE l.depth = $1 \
             ON CONFLICT (key) DO NOTHING",
        ),
    };
    for sql in [
        "DROP TABLE IF EXISTS gc_live",
        table,
        "CREATE INDEX gc_live_depth ON gc_live (depth)",
    ] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("create the live set table")?;
    }
    // Roots older than the cutoff are already deleted in a real run; a dry run keeps
    // them, so the cutoff appears here too.
    sqlx::query(seed)
        .bind(root_cutoff)
        .execute(&mut *conn)
        .await
        .context("collect roots, pins and pending objects")?;
    let mut depth: i64 = 0;
    loop {
        let added = sqlx::query(step)
            .bind(depth)
            .bind(depth + 1)
            .execute(&mut *conn)
            .await
            .context("follow references")?
            .rows_affected();
        if added == 0 {
            break;
        }
        depth += 1;
    }
    if backend == Backend::Postgres {
        // Temporary tables get no automatic statistics; the anti-join needs them.
        sqlx::query("ANALYZE gc_live")
            .execute(&mut *conn)
            .await
            .context("analyze the live set")?;
    }
    Ok(())
}

/// The objects to consider for deletion, gathered once per sweep: every object marked
/// no later than the grace cutoff, numbered in the order a scan of the table met them
/// (so batches visit the table's pages in order), in the temporary table `gc_sweep`.
///
/// No index covers the mark columns (so that marking rewrites rows in place), hence the
/// one full scan; afterwards each batch finds its rows by key.
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
    let table = match backend {
        Backend::Postgres => "CREATE TEMP TABLE gc_sweep (n BIGINT PRIMARY KEY, key TEXT NOT NULL)",
        Backend::Sqlite => "CREATE TEMP TABLE gc_sweep (n INTEGER PRIMARY KEY, key TEXT NOT NULL)",
    };
    for sql in ["DROP TABLE IF EXISTS gc_sweep", table] {
        sqlx::query(sql)
            .execute(&mut *conn)
            .await
            .context("create the sweep table")?;
    }
    let total = sqlx::query(
        "INSERT INTO gc_sweep (n, key) SELECT ROW_NUMBER() OVER (), key FROM objects \
         WHERE marked_epoch IS NOT NULL AND marked_at <= $1",
    )
    .bind(cutoff)
    .execute(&mut *conn)
    .await
    .context("find objects to sweep")?
    .rows_affected();
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
        let mut tx = self.conn.begin().await.context("begin a sweep batch")?;
        if self.backend == Backend::Sqlite {
            sqlx::query("UPDATE meta SET value = value WHERE name = 'gc_epoch'")
                .execute(&mut *tx)
                .await
                .context("take the SQLite write lock")?;
        }
        let lock = if self.backend == Backend::Postgres {
            " FOR UPDATE"
        } else {
            ""
        };
        let sql = format!(
            "SELECT key, COALESCE(file_size, nar_size, 0) FROM objects \
             WHERE key IN ({BATCH_KEYS}) \
             AND marked_epoch IS NOT NULL AND marked_at <= $3 AND touched_epoch < marked_epoch \
             AND NOT EXISTS (SELECT 1 FROM pending_objects p WHERE p.key = objects.key){lock}"
        );
        let mut doomed = sqlx::query(trusted_sql(sql))
            .bind(first)
            .bind(last)
            .bind(self.cutoff)
            .fetch_all(&mut *tx)
            .await
            .context("lock objects to sweep")?
            .iter()
            .map(|r| {
                Ok(Doomed {
                    key: r.try_get(0)?,
                    size: r.try_get(1)?,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .context("decode objects to sweep")?;
        if self.backend == Backend::Postgres && !doomed.is_empty() {
            // A push that started while this batch waited for one of its rows has
            // committed its pending objects after the statement above took its
            // snapshot, and locking a row it did not change made PostgreSQL return
            // that row without re-checking it. Now that every row is locked, a new
            // snapshot sees every such session; later ones wait for this batch.
            let pending: std::collections::HashSet<String> = sqlx::query(trusted_sql(format!(
                "SELECT DISTINCT key FROM pending_objects WHERE key IN ({BATCH_KEYS})"
            )))
            .bind(first)
            .bind(last)
            .fetch_all(&mut *tx)
            .await
            .context("re-check pending sessions")?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()
            .context("decode pending keys")?;
            doomed.retain(|d| !pending.contains(&d.key));
        }
        Ok(Some(SweepBatch {
            tx,
            backend: self.backend,
            doomed,
        }))
    }
}

/// A sweep batch in progress: rows locked and re-checked, waiting for the bucket.
#[derive(Debug)]
pub struct SweepBatch<'c> {
    tx: Transaction<'c, Any>,
    backend: Backend,
    /// The objects confirmed for deletion.
    pub doomed: Vec<Doomed>,
}

impl SweepBatch<'_> {
    /// Deletes the rows of `deleted` (those the bucket no longer holds) and commits.
    pub async fn commit(mut self, deleted: &[String]) -> Result<(), DbError> {
        super::journal::record_sweep(&mut self.tx, deleted, super::now_ms()).await?;
        if self.backend == Backend::Postgres {
            // The keys travel as one JSON array: PostgreSQL plans a list of thousands of
            // parameters as a scan of the whole table (at 100,000 store paths every
            // batch read all of `refs` and `objects`), a set-returning function as a
            // few rows to look up by index.
            let keys = serde_json::to_string(deleted).unwrap_or_else(|_| "[]".into());
            for sql in [
                "DELETE FROM refs WHERE from_key IN (SELECT json_array_elements_text($1::json))",
                "DELETE FROM objects WHERE key IN (SELECT json_array_elements_text($1::json))",
            ] {
                sqlx::query(sql)
                    .bind(&keys)
                    .execute(&mut *self.tx)
                    .await
                    .context("delete swept rows")?;
            }
            return self.tx.commit().await.context("commit a sweep batch");
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
}

/// Keys per row-deleting statement: well under SQLite's limit of bound parameters.
const DELETE_CHUNK: usize = 10_000;
