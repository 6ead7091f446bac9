//! Committed closures (GC roots) as the admin API shows them.

use sqlx::Row;

use super::pins::REACHABLE;
use super::{trusted_sql, Db, DbError, QueryContext};

/// A root and every object it reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closure {
    /// The root's narinfo key.
    pub key: String,
    /// Last push (Unix ms).
    pub updated_at: i64,
    /// Every object reachable from the root, itself included, sorted.
    pub objects: Vec<String>,
}

/// The closure rooted at `key`, or `None` when `key` is no root.
pub async fn get(db: &Db, key: &str) -> Result<Option<Closure>, DbError> {
    let Some(row) = sqlx::query("SELECT updated_at FROM closures WHERE key = $1")
        .bind(key)
        .fetch_optional(db.pool())
        .await
        .context("look up a closure")?
    else {
        return Ok(None);
    };
    let updated_at: i64 = row.try_get(0).context("decode updated_at")?;
    let objects = sqlx::query(trusted_sql(format!(
        "{REACHABLE} SELECT reach.key FROM reach JOIN objects o ON o.key = reach.key \
         ORDER BY reach.key"
    )))
    .bind(key)
    .fetch_all(db.pool())
    .await
    .context("walk a closure")?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<Vec<String>, _>>()
    .context("decode closure objects")?;
    Ok(Some(Closure {
        key: key.to_string(),
        updated_at,
        objects,
    }))
}
