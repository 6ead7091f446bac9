//! The sweep's database side: the candidates of a sweep, gathered once, and the
//! batches that lock, re-check and delete them, from one or more connections ("lanes").
//! Why this is safe against concurrent pushes: docs/gc.md, rule 4.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::{Acquire, Any, AnyConnection, Row, Transaction};

use super::gc::{gc_connection, lanes_of, more_connections, page_ranges, PageRange};
use super::gc_live::ms_since;
use super::gc_tables::WorkTables;
use super::pending::placeholders;
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// A candidate for deletion: key and stored size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Doomed {
    /// Object key.
    pub key: String,
    /// Bytes it occupies (file size, else NAR size, else 0).
    pub size: i64,
}

/// What every lane of one sweep shares: the cutoff and the next candidate number.
#[derive(Debug)]
struct Plan {
    backend: Backend,
    tables: WorkTables,
    cutoff: i64,
    next: AtomicI64,
    total: i64,
}

/// One lane of a sweep: a connection of its own that takes batches of candidates.
///
/// The candidates are gathered once per sweep: every object marked no later than the
/// grace cutoff, numbered in the order a scan of the table met them (so batches visit
/// the table's pages in order), in the table `gc_sweep`. No index covers the mark
/// columns (so that marking rewrites rows in place), hence the one full scan.
///
/// On PostgreSQL the sweep also notes where each candidate's row and each of its
/// references lie (`ctid`): a batch then reaches its rows page by page instead of
/// descending the primary keys once per key (at a million store paths, deleting 4.8
/// million references one index probe at a time was most of the sweep). A location is
/// only a way in: every statement that uses one also compares the key, so a row that
/// moved (an update, or a table rewrite by `VACUUM FULL`) is missed, never mistaken for
/// another. Why a missed reference cannot happen: docs/gc.md, rule 4.
///
/// On PostgreSQL `gc_sweep` and `gc_sweep_refs` are unlogged tables that every lane
/// reads (the run lock keeps other runs out; [`Sweeper::finish`] drops them, and the
/// next sweep drops what a crashed one left). Lanes take disjoint ranges of candidate
/// numbers, so they never wait for each other's rows, and while one lane waits for the
/// bucket another works in the database. A user who may not create tables in the
/// schema gets one lane with temporary tables instead (`gc_tables`). SQLite has one
/// lane (one writer at a time) and keeps `gc_sweep` as a temporary table of its
/// connection.
#[derive(Debug)]
pub struct Sweeper {
    conn: PoolConnection<Any>,
    plan: Arc<Plan>,
}

/// What one lane locked and kept in its current batch; emptied by the batch's commit
/// (or rollback).
const CREATE_BATCH_TABLE: &str = "CREATE TEMP TABLE gc_batch (n BIGINT NOT NULL, \
     key TEXT NOT NULL, tid TID NOT NULL, size BIGINT NOT NULL) ON COMMIT DELETE ROWS";

/// PostgreSQL: statements that gather the candidates of objects marked no later than
/// `$1` (the only parameter, of the statement that fills `gc_sweep`).
const GATHER_PG: &[&str] = &[
    "DROP TABLE IF EXISTS gc_sweep",
    "DROP TABLE IF EXISTS gc_sweep_refs",
    // Autovacuum stays away from these short-lived tables: the sweep analyzes them
    // itself and never updates them.
    "CREATE UNLOGGED TABLE gc_sweep WITH (autovacuum_enabled = false) AS \
     SELECT ROW_NUMBER() OVER () AS n, key, ctid AS tid FROM objects \
     WHERE marked_epoch IS NOT NULL AND marked_at <= $1",
    "CREATE INDEX gc_sweep_n ON gc_sweep (n)",
    "ANALYZE gc_sweep",
    "CREATE UNLOGGED TABLE gc_sweep_refs (n BIGINT NOT NULL, tid TID NOT NULL) \
     WITH (autovacuum_enabled = false)",
];

/// PostgreSQL: what each lane does to fill `gc_sweep_refs`, every reference from a
/// candidate, over its range of the pages of `refs` (`$1`, `$2`): a hash join with
/// the candidates, in table order, instead of an index probe per candidate. The
/// candidates' keys are hashed in each lane: about 1.5 million keys at a million store
/// paths, 150 MB of hash table for each lane's backend while the sweep starts (at
/// 64 MB it spilled 500 MB to temporary files). References are never updated, only
/// added (with an unmarked source, docs/gc.md rule 4) and deleted by the collector, so
/// a reference cannot move from one lane's range to another's meanwhile.
const FIND_REFS_PG: &str = "INSERT INTO gc_sweep_refs (n, tid) \
     SELECT s.n, r.ctid FROM refs r JOIN gc_sweep s ON r.from_key = s.key WHERE ";

/// PostgreSQL: what makes the references of a range of candidates quick to find.
const INDEX_REFS_PG: &[&str] = &[
    "CREATE INDEX gc_sweep_refs_n ON gc_sweep_refs (n)",
    "ANALYZE gc_sweep_refs",
];

/// SQLite: the same for its one lane.
const GATHER_SQLITE: &[&str] = &[
    "DROP TABLE IF EXISTS gc_sweep",
    "CREATE TEMP TABLE gc_sweep (n INTEGER PRIMARY KEY, key TEXT NOT NULL)",
    "INSERT INTO gc_sweep (n, key) SELECT ROW_NUMBER() OVER (), key FROM objects \
     WHERE marked_epoch IS NOT NULL AND marked_at <= $1",
];

/// Runs `statements` on `conn`, binding `cutoff` where one has a parameter.
async fn run_all(
    conn: &mut AnyConnection,
    tables: WorkTables,
    statements: &[&'static str],
    cutoff: i64,
) -> Result<(), DbError> {
    for sql in statements.iter().filter_map(|&sql| tables.adapt(sql)) {
        let started = std::time::Instant::now();
        let query = sqlx::query(trusted_sql(sql.to_string()));
        let query = if sql.contains("$1") {
            query.bind(cutoff)
        } else {
            query
        };
        query
            .execute(&mut *conn)
            .await
            .context("gather the objects to sweep")?;
        let ms = ms_since(started);
        tracing::debug!(ms, "gc sweep: {}", sql.get(..60).unwrap_or(&sql));
    }
    Ok(())
}

/// Starts a sweep of objects marked no later than `cutoff` (Unix ms) with one lane.
pub async fn start_sweep(db: &Db, cutoff: i64) -> Result<Sweeper, DbError> {
    Ok(start_sweep_in_lanes(db, cutoff, 1).await?.0)
}

/// Starts a sweep of objects marked no later than `cutoff` (Unix ms): gathers the
/// candidates, on PostgreSQL with `lanes` connections (at least one), and returns
/// one [`Sweeper`] per connection: the first, which [`Sweeper::finish`]es the sweep,
/// and the others. SQLite always has one lane: a second writer would only wait for
/// the first.
pub async fn start_sweep_in_lanes(
    db: &Db,
    cutoff: i64,
    lanes: usize,
) -> Result<(Sweeper, Vec<Sweeper>), DbError> {
    let backend = db.backend();
    let mut first = gc_connection(db).await?;
    if backend == Backend::Sqlite {
        let tables = WorkTables::Private;
        run_all(&mut first, tables, GATHER_SQLITE, cutoff).await?;
        return Ok((
            Sweeper::new(first, backend, tables, cutoff).await?,
            Vec::new(),
        ));
    }
    let tables = WorkTables::choose(&mut first).await?;
    run_all(&mut first, tables, GATHER_PG, cutoff).await?;
    let mut others = more_connections(db, tables.lanes(lanes) - 1).await?;
    let mut conns = lanes_of(&mut first, &mut others);
    let started = std::time::Instant::now();
    let lanes = conns.len();
    let bounds = page_ranges(conns[0], "refs", lanes).await?;
    let fills = conns
        .into_iter()
        .zip(&bounds)
        .map(|(conn, (from, to))| async move {
            run_all(conn, tables, &["SET work_mem = '128MB'"], cutoff).await?;
            let sql = format!("{FIND_REFS_PG}{}", PageRange::sql("r", 1, to.is_some()));
            let query = PageRange::bind(sqlx::query(trusted_sql(sql)), from, to.as_deref());
            query
                .execute(&mut *conn)
                .await
                .context("find the references of objects to sweep")?;
            run_all(
                conn,
                tables,
                &["RESET work_mem", CREATE_BATCH_TABLE],
                cutoff,
            )
            .await
        });
    futures::future::try_join_all(fills).await?;
    tracing::debug!(ms = ms_since(started), "gc sweep: found the references");
    run_all(&mut first, tables, INDEX_REFS_PG, cutoff).await?;
    let first = Sweeper::new(first, backend, tables, cutoff).await?;
    let others = others
        .into_iter()
        .map(|conn| Sweeper {
            conn,
            plan: Arc::clone(&first.plan),
        })
        .collect();
    Ok((first, others))
}

impl Sweeper {
    /// The first lane of a sweep whose candidates are gathered on `conn`.
    async fn new(
        mut conn: PoolConnection<Any>,
        backend: Backend,
        tables: WorkTables,
        cutoff: i64,
    ) -> Result<Self, DbError> {
        let total: i64 = sqlx::query("SELECT CAST(COALESCE(MAX(n), 0) AS BIGINT) FROM gc_sweep")
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .context("count the objects to sweep")?;
        Ok(Sweeper {
            conn,
            plan: Arc::new(Plan {
                backend,
                tables,
                cutoff,
                next: AtomicI64::new(1),
                total,
            }),
        })
    }

    /// How many objects were marked no later than the cutoff when the sweep started.
    pub fn candidates(&self) -> u64 {
        u64::try_from(self.plan.total).unwrap_or(0)
    }

    /// Locks the next (at most `limit`) candidates that are still safe to delete:
    /// marked, past grace, not touched since their mark, in no pending session. The
    /// caller deletes them from the bucket, then [`SweepBatch::commit`]s (or drops the
    /// batch to keep them). `None` when every candidate has been taken by a lane.
    pub async fn next_batch(&mut self, limit: i64) -> Result<Option<SweepBatch<'_>>, DbError> {
        let limit = limit.max(1);
        let first = self.plan.next.fetch_add(limit, Ordering::Relaxed);
        if first > self.plan.total {
            return Ok(None);
        }
        let last = first.saturating_add(limit - 1);
        let (backend, cutoff) = (self.plan.backend, self.plan.cutoff);
        let mut tx = self.conn.begin().await.context("begin a sweep batch")?;
        let doomed = match backend {
            Backend::Postgres => lock_batch_pg(&mut tx, first, last, cutoff).await?,
            Backend::Sqlite => lock_batch_sqlite(&mut tx, first, last, cutoff).await?,
        };
        Ok(Some(SweepBatch {
            tx,
            backend,
            range: (first, last),
            doomed,
        }))
    }

    /// Drops the tables every lane shared (shared work tables only: temporary ones go
    /// with their connections); call once every lane is done.
    pub async fn finish(mut self) -> Result<(), DbError> {
        if self.plan.tables == WorkTables::Shared {
            sqlx::query("DROP TABLE IF EXISTS gc_sweep, gc_sweep_refs")
                .execute(&mut *self.conn)
                .await
                .context("drop the sweep tables")?;
        }
        Ok(())
    }
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
