//! What signing checks a narinfo against: the narinfos a session declared, with the
//! references each declared for GC.

use std::collections::BTreeMap;

use sqlx::Row;

use super::{Db, DbError, QueryContext};

/// The narinfos of session `id` and the keys each references (sorted), by key; `None`
/// when there is no such session.
pub async fn declared_narinfos(
    db: &Db,
    id: i64,
) -> Result<Option<BTreeMap<String, Vec<String>>>, DbError> {
    if !super::pending::session_exists(db.pool(), id).await? {
        return Ok(None);
    }
    let rows =
        sqlx::query("SELECT key, refs FROM pending_objects WHERE pending_id = $1 AND kind = $2")
            .bind(id)
            .bind(crate::upload::plan::kind_code(
                crate::nix::ObjectType::Narinfo,
            ))
            .fetch_all(db.pool())
            .await
            .context("list pending narinfos")?;
    let mut narinfos = BTreeMap::new();
    for row in &rows {
        let key: String = row.try_get(0).context("decode key")?;
        let refs: String = row.try_get(1).context("decode refs")?;
        let mut refs = super::pending::decode_refs(&key, &refs)?;
        refs.sort_unstable();
        narinfos.insert(key, refs);
    }
    Ok(Some(narinfos))
}
