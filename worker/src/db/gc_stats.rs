//! Cumulative GC statistics kept in the database, so runs made by CronJobs (separate
//! processes that exit) still show up in every worker's `/metrics`.

use sqlx::Row;

use super::{Db, DbError, QueryContext};

/// Totals over every run against this database.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcStats {
    /// Runs that finished.
    pub runs_succeeded: i64,
    /// Runs that failed.
    pub runs_failed: i64,
    /// Objects deleted by all runs.
    pub objects_deleted: i64,
    /// Bytes deleted by all runs.
    pub bytes_deleted: i64,
    /// End of the last successful run (Unix ms), 0 if none.
    pub last_success_ms: i64,
    /// Duration of the last successful run (ms).
    pub last_duration_ms: i64,
}

const NAMES: [&str; 6] = [
    "gc_runs_succeeded",
    "gc_runs_failed",
    "gc_objects_deleted",
    "gc_bytes_deleted",
    "gc_last_success_ms",
    "gc_last_duration_ms",
];

/// Adds `value` to the counter `name`, or with `replace` sets it.
async fn write(db: &Db, name: &str, value: i64, replace: bool) -> Result<(), DbError> {
    let sql = if replace {
        "INSERT INTO meta (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = excluded.value"
    } else {
        "INSERT INTO meta (name, value) VALUES ($1, $2) \
         ON CONFLICT (name) DO UPDATE SET value = meta.value + excluded.value"
    };
    sqlx::query(sql)
        .bind(name)
        .bind(value)
        .execute(db.pool())
        .await
        .context("update GC statistics")?;
    Ok(())
}

async fn add(db: &Db, name: &str, delta: i64) -> Result<(), DbError> {
    write(db, name, delta, false).await
}

async fn set(db: &Db, name: &str, value: i64) -> Result<(), DbError> {
    write(db, name, value, true).await
}

/// Records a successful (non-dry) run.
pub async fn record_success(
    db: &Db,
    objects_deleted: i64,
    bytes_deleted: i64,
    duration_ms: i64,
    now: i64,
) -> Result<(), DbError> {
    add(db, "gc_runs_succeeded", 1).await?;
    add(db, "gc_objects_deleted", objects_deleted).await?;
    add(db, "gc_bytes_deleted", bytes_deleted).await?;
    set(db, "gc_last_success_ms", now).await?;
    set(db, "gc_last_duration_ms", duration_ms).await
}

/// Records a failed run.
pub async fn record_failure(db: &Db) -> Result<(), DbError> {
    add(db, "gc_runs_failed", 1).await
}

/// Reads the totals.
pub async fn read(db: &Db) -> Result<GcStats, DbError> {
    let rows = sqlx::query("SELECT name, value FROM meta WHERE name IN ($1, $2, $3, $4, $5, $6)")
        .bind(NAMES[0])
        .bind(NAMES[1])
        .bind(NAMES[2])
        .bind(NAMES[3])
        .bind(NAMES[4])
        .bind(NAMES[5])
        .fetch_all(db.pool())
        .await
        .context("read GC statistics")?;
    let mut stats = GcStats::default();
    for row in rows {
        let name: String = row.try_get(0).context("decode name")?;
        let value: i64 = row.try_get(1).context("decode value")?;
        let slot = match name.as_str() {
            "gc_runs_succeeded" => &mut stats.runs_succeeded,
            "gc_runs_failed" => &mut stats.runs_failed,
            "gc_objects_deleted" => &mut stats.objects_deleted,
            "gc_bytes_deleted" => &mut stats.bytes_deleted,
            "gc_last_success_ms" => &mut stats.last_success_ms,
            _ => &mut stats.last_duration_ms,
        };
        *slot = value;
    }
    Ok(stats)
}
