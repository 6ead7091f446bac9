//! The collector's database side: run lock, root expiry, epoch switch, mark, sweep.
//! The protocol and why it is safe against concurrent pushes: docs/gc.md.

use sqlx::any::AnyRow;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Row};

use super::gc_tables::WorkTables;
use super::pending::GC_LOCK_ID;
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

pub use super::gc_sweep::{start_sweep, start_sweep_in_lanes, Doomed, SweepBatch, Sweeper};

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
    let mut first = gc_connection(db).await?;
    let tables = match backend {
        Backend::Postgres => WorkTables::choose(&mut first).await?,
        Backend::Sqlite => WorkTables::Private,
    };
    let mut others = more_connections(db, tables.lanes(LANES) - 1).await?;
    let mut conns = lanes_of(&mut first, &mut others);
    if backend == Backend::Postgres {
        for conn in conns.iter_mut() {
            // The anti-join's hash table of the live set (1.5 million hashes at a
            // million store paths) stays in memory: that memory belongs to one
            // PostgreSQL backend per lane, for the length of the mark.
            let _ = sqlx::query("SET work_mem = '64MB'")
                .execute(&mut **conn)
                .await;
        }
    }
    super::gc_live::build(&mut conns, backend, tables, root_cutoff).await?;
    let started = std::time::Instant::now();
    let counted = if backend == Backend::Postgres && !dry_run {
        mark_in_lanes(&mut conns, epoch, now).await
    } else {
        mark_on(conns[0], backend, epoch, now, dry_run).await
    };
    if tables == WorkTables::Shared {
        // Dropped even when marking failed; a crash leaves it to the next mark.
        sqlx::query("DROP TABLE IF EXISTS gc_live")
            .execute(&mut *conns[0])
            .await
            .context("drop the live set")?;
    }
    let counted = counted?;
    tracing::debug!(
        marked = counted.0,
        ms = super::gc_live::ms_since(started),
        "gc mark: marked"
    );
    Ok((u64::try_from(counted.0).unwrap_or(0), counted.1))
}

/// Connections that mark or sweep at once on PostgreSQL (when the collector may
/// create its work tables, see `gc_tables`): the database gets a second core, and
/// during the sweep one lane works in the database while another waits for the bucket.
pub const LANES: usize = 2;

/// Objects whose keys (on PostgreSQL: whose keys' hashes) are not in the live set.
/// Only objects last touched in an older epoch (`$1`) qualify: a push since the epoch
/// switch stamped what it relies on, and a push stamping a row while this runs makes
/// PostgreSQL re-check that row.
fn dead(backend: Backend) -> &'static str {
    match backend {
        Backend::Postgres => {
            "marked_epoch IS NULL AND touched_epoch < $1 AND NOT EXISTS (SELECT 1 FROM gc_live l \
             WHERE l.h = hashtextextended(objects.key, 0))"
        }
        Backend::Sqlite => {
            "marked_epoch IS NULL AND touched_epoch < $1 \
             AND NOT EXISTS (SELECT 1 FROM gc_live l WHERE l.key = objects.key)"
        }
    }
}

/// The stored size of an object, as the mark and sweep count it.
const SIZE: &str = "COALESCE(file_size, nar_size, 0)";

/// PostgreSQL: marks in one statement per connection of `conns`, all at once, each
/// over its own range of the table's pages (a TID range scan). Each
/// statement takes its own snapshot after the epoch switch, which rule 3 allows (a
/// later snapshot only adds live objects, and rows a push stamps meanwhile no longer
/// qualify). Returns the count and bytes marked.
async fn mark_in_lanes(
    conns: &mut [&mut AnyConnection],
    epoch: i64,
    now: i64,
) -> Result<(i64, i64), DbError> {
    // The last range has no end, for rows added past the table's end since it was
    // measured (which a push stamped: none qualify).
    let bounds = page_ranges(conns[0], "objects", conns.len()).await?;
    let marks = conns
        .iter_mut()
        .zip(&bounds)
        .map(|(c, (from, to))| mark_range(c, epoch, now, from, to.as_deref()));
    let counts = futures::future::try_join_all(marks).await?;
    Ok(counts
        .into_iter()
        .fold((0, 0), |(n, b), (n2, b2)| (n + n2, b + b2)))
}

/// PostgreSQL: marks what is dead among rows located from `from` up to (not including)
/// `to`. One pass: the update reports the sizes of what it marked. No index covers the
/// mark columns (migration 0003), so with room on the page (the table's fill factor)
/// PostgreSQL rewrites each row in place instead of adding index entries.
async fn mark_range(
    conn: &mut AnyConnection,
    epoch: i64,
    now: i64,
    from: &str,
    to: Option<&str>,
) -> Result<(i64, i64), DbError> {
    let dead = dead(Backend::Postgres);
    let range = PageRange::sql("objects", 3, to.is_some());
    let sql = format!(
        "WITH marked AS (UPDATE objects SET marked_epoch = $1, marked_at = $2 \
         WHERE {range} AND {dead} RETURNING {SIZE} AS size) \
         SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM marked"
    );
    let query = sqlx::query(trusted_sql(sql)).bind(epoch).bind(now);
    let query = PageRange::bind(query, from, to);
    let row = query
        .fetch_one(&mut *conn)
        .await
        .context("mark unreachable objects")?;
    decode_counted(&row)
}

/// The `(COUNT(*), SUM(size))` row a marking or counting statement returns.
fn decode_counted(row: &AnyRow) -> Result<(i64, i64), DbError> {
    let count: i64 = row.try_get(0).context("decode count")?;
    let bytes: i64 = row.try_get(1).context("decode bytes")?;
    Ok((count, bytes))
}

/// The ranges of a table's pages that `lanes` statements take, as `ctid` bounds
/// (`(page,0)`); the last has no end.
pub(crate) async fn page_ranges(
    conn: &mut AnyConnection,
    table: &'static str,
    lanes: usize,
) -> Result<Vec<(String, Option<String>)>, DbError> {
    let pages = table_pages(conn, table).await?;
    let lanes = i64::try_from(lanes.max(1)).unwrap_or(1);
    let step = pages / lanes + 1;
    Ok((0..lanes)
        .map(|i| PageRange::bounds(i, step, lanes))
        .collect())
}

/// How many pages `table` has now.
pub(crate) async fn table_pages(
    conn: &mut AnyConnection,
    table: &'static str,
) -> Result<i64, DbError> {
    sqlx::query(trusted_sql(format!(
        "SELECT CAST(pg_relation_size('{table}') / current_setting('block_size')::int \
         AS BIGINT)"
    )))
    .fetch_one(&mut *conn)
    .await
    .and_then(|r| r.try_get(0))
    .context("measure a table")
}

/// SQL for a condition on `ctid` between two bound parameters.
pub(crate) struct PageRange;

impl PageRange {
    /// The `ctid` bounds of range `i` of `count` ranges of `step` pages each: from
    /// `(i*step,0)` up to the next range's start; the last range has no end.
    pub(crate) fn bounds(i: i64, step: i64, count: i64) -> (String, Option<String>) {
        let end = (i + 1 < count).then(|| format!("({},0)", (i + 1) * step));
        (format!("({},0)", i * step), end)
    }

    /// `ctid >= $first [AND ctid < $(first+1)]`, of the table `alias`.
    pub(crate) fn sql(alias: &str, first: usize, bounded: bool) -> String {
        let upper = if bounded {
            format!(" AND {alias}.ctid < CAST(${} AS tid)", first + 1)
        } else {
            String::new()
        };
        format!("{alias}.ctid >= CAST(${first} AS tid){upper}")
    }

    /// Binds the bounds of [`PageRange::sql`].
    pub(crate) fn bind<'q>(
        query: sqlx::query::Query<'q, Any, sqlx::any::AnyArguments>,
        from: &'q str,
        to: Option<&'q str>,
    ) -> sqlx::query::Query<'q, Any, sqlx::any::AnyArguments> {
        let query = query.bind(from);
        match to {
            Some(to) => query.bind(to),
            None => query,
        }
    }
}

/// Marks (or with `dry_run` only counts) on one connection: SQLite, and dry runs.
async fn mark_on(
    conn: &mut AnyConnection,
    backend: Backend,
    epoch: i64,
    now: i64,
    dry_run: bool,
) -> Result<(i64, i64), DbError> {
    let dead = dead(backend);
    let counted = if dry_run {
        sqlx::query(trusted_sql(format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM({SIZE}), 0) AS BIGINT) FROM objects WHERE {dead}"
        )))
        .bind(epoch)
        .fetch_one(&mut *conn)
        .await
        .context("count unreachable objects")?
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
    decode_counted(&counted)
}

/// `n` more connections of their own (see [`gc_connection`]), for a step's other lanes.
pub(crate) async fn more_connections(
    db: &Db,
    n: usize,
) -> Result<Vec<PoolConnection<Any>>, DbError> {
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        conns.push(gc_connection(db).await?);
    }
    Ok(conns)
}

/// A step's connections, one per lane: `first`, then `others`.
pub(crate) fn lanes_of<'c>(
    first: &'c mut AnyConnection,
    others: &'c mut [PoolConnection<Any>],
) -> Vec<&'c mut AnyConnection> {
    let mut conns = vec![first];
    conns.extend(others.iter_mut().map(|c| &mut **c));
    conns
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
