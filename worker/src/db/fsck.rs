//! What `larder fsck` checks against the bucket: every object a root or pin reaches.

use sqlx::Row;

use super::{Db, DbError, QueryContext};

/// An object some live root or pin reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveObject {
    /// Object key.
    pub key: String,
    /// Stored size, when the pusher declared it.
    pub file_size: Option<i64>,
    /// `sha256:…` of the stored bytes, when the pusher declared it.
    pub file_hash: Option<String>,
    /// Whether the object has a row (a reference may name one never committed).
    pub has_row: bool,
}

/// Every object reachable from a committed root or a pin, sorted by key. Roots past
/// their retention count until a GC run expires them: until then they are served.
pub async fn live_objects(db: &Db) -> Result<Vec<LiveObject>, DbError> {
    let rows = sqlx::query(
        "WITH RECURSIVE live(key) AS ( \
            SELECT key FROM closures UNION SELECT narinfo_key FROM pins \
            UNION SELECT r.to_key FROM refs r JOIN live l ON r.from_key = l.key) \
         SELECT live.key, o.file_size, o.file_hash, CASE WHEN o.key IS NULL THEN 0 ELSE 1 END FROM live \
         LEFT JOIN objects o ON o.key = live.key ORDER BY live.key",
    )
    .fetch_all(db.pool())
    .await
    .context("list live objects")?;
    rows.iter()
        .map(|r| {
            Ok(LiveObject {
                key: r.try_get(0)?,
                file_size: r.try_get(1)?,
                file_hash: r.try_get(2)?,
                has_row: r.try_get::<i64, _>(3)? != 0,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .context("decode live objects")
}
