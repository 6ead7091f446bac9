//! Pins: named GC roots that never expire, and the closure they hold.

use sqlx::Row;

use super::pending::{begin_push, touch_present};
use super::{trusted_sql, Db, DbError, QueryContext};

/// A pin as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pin {
    /// Pin name.
    pub name: String,
    /// The pinned store path.
    pub store_path: String,
    /// Creation time (Unix ms).
    pub created_at: i64,
    /// Last change (Unix ms).
    pub updated_at: i64,
}

/// What pinning found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinOutcome {
    /// The pin now holds the closure.
    Pinned,
    /// The path was never pushed (or its narinfo is gone).
    NotPushed,
    /// Part of the closure is missing or marked by GC; push the path again first.
    Incomplete(Vec<String>),
}

/// Every object reachable from `root_key` through references, itself included.
pub(crate) const REACHABLE: &str = "WITH RECURSIVE reach(key) AS ( \
        SELECT CAST($1 AS TEXT) UNION SELECT r.to_key FROM refs r JOIN reach ON r.from_key = reach.key) ";

/// Pins `narinfo_key` as `name`: under the push lock, checks the closure is whole and
/// unmarked and stamps it, so a GC run already past its mark cannot sweep any of it.
pub async fn create(
    db: &Db,
    name: &str,
    store_path: &str,
    narinfo_key: &str,
    now: i64,
) -> Result<PinOutcome, DbError> {
    let (mut tx, epoch) = begin_push(db).await?;
    let rows = sqlx::query(trusted_sql(format!(
        "{REACHABLE} SELECT reach.key, CASE WHEN o.key IS NULL THEN 0 ELSE 1 END, \
         CASE WHEN o.marked_epoch IS NULL THEN 0 ELSE 1 END \
         FROM reach LEFT JOIN objects o ON o.key = reach.key ORDER BY reach.key"
    )))
    .bind(narinfo_key)
    .fetch_all(&mut *tx)
    .await
    .context("walk the closure to pin")?;
    let mut keys = Vec::with_capacity(rows.len());
    let mut unusable = Vec::new();
    for row in &rows {
        let key: String = row.try_get(0).context("decode key")?;
        // Booleans as integers: the one representation both backends decode alike.
        let present = row.try_get::<i64, _>(1).context("decode presence")? != 0;
        let marked = row.try_get::<i64, _>(2).context("decode mark")? != 0;
        if key == narinfo_key && !present {
            return Ok(PinOutcome::NotPushed);
        }
        if !present || marked {
            unusable.push(key.clone());
        }
        keys.push(key);
    }
    if !unusable.is_empty() {
        return Ok(PinOutcome::Incomplete(unusable));
    }
    let sorted: Vec<&str> = keys.iter().map(String::as_str).collect();
    let trusted = touch_present(&mut tx, db.backend(), &sorted, epoch, now).await?;
    if trusted.len() != keys.len() {
        // Marked between the walk and the row locks (SQLite cannot interleave; PostgreSQL
        // can): refuse rather than pin what may already be swept.
        let lost = keys.into_iter().filter(|k| !trusted.contains(k)).collect();
        return Ok(PinOutcome::Incomplete(lost));
    }
    sqlx::query(
        "INSERT INTO pins (name, store_path, narinfo_key, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (name) DO UPDATE SET store_path = excluded.store_path, \
         narinfo_key = excluded.narinfo_key, created_at = excluded.created_at",
    )
    .bind(name)
    .bind(store_path)
    .bind(narinfo_key)
    .bind(now)
    .execute(&mut *tx)
    .await
    .context("record the pin")?;
    tx.commit().await.context("commit the pin")?;
    Ok(PinOutcome::Pinned)
}

/// Every pin, by name.
pub async fn list(db: &Db) -> Result<Vec<Pin>, DbError> {
    let rows = sqlx::query("SELECT name, store_path, created_at FROM pins ORDER BY name")
        .fetch_all(db.pool())
        .await
        .context("list pins")?;
    rows.iter()
        .map(|r| {
            let created_at: i64 = r.try_get(2)?;
            Ok(Pin {
                name: r.try_get(0)?,
                store_path: r.try_get(1)?,
                created_at,
                updated_at: created_at,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("decode pins")
}

/// Removes pin `name`; false when there was none.
pub async fn delete(db: &Db, name: &str) -> Result<bool, DbError> {
    let done = sqlx::query("DELETE FROM pins WHERE name = $1")
        .bind(name)
        .execute(db.pool())
        .await
        .context("delete a pin")?;
    Ok(done.rows_affected() > 0)
}
