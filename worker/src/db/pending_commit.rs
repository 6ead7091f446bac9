//! Committing an upload session: its objects, references and root become permanent.

use sqlx::Row;

use super::pending::{begin_push, chunk_rows, placeholders, ClosureObject};
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// What a commit left for storage to do.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Committed {
    /// Multipart uploads `(key, upload id)` the session opened and never completed (the
    /// object came by another upload). The commit forgets them; the caller aborts them.
    pub abandoned_uploads: Vec<(String, String)>,
}

/// Commits session `id`: its objects and references become permanent and its closure a
/// GC root. Returns `None` when the session does not exist (already committed or cleaned).
pub async fn complete(db: &Db, id: i64, now: i64) -> Result<Option<Committed>, DbError> {
    let (mut tx, epoch) = begin_push(db).await?;
    let lock = if db.backend() == Backend::Postgres {
        " FOR UPDATE"
    } else {
        ""
    };
    let closure: Option<String> = sqlx::query(trusted_sql(format!(
        "SELECT closure_key FROM pending_closures WHERE id = $1{lock}"
    )))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await
    .context("look up the pending closure")?
    .map(|row| row.try_get(0))
    .transpose()
    .context("decode closure key")?;
    let Some(closure) = closure else {
        return Ok(None);
    };
    let rows = sqlx::query(
        "SELECT key, kind, refs, nar_size, file_size, file_hash FROM pending_objects \
         WHERE pending_id = $1 ORDER BY key",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await
    .context("read pending objects")?;
    let mut objects = Vec::with_capacity(rows.len());
    for row in &rows {
        let key: String = row.try_get(0).context("decode key")?;
        let refs: String = row.try_get(2).context("decode refs")?;
        objects.push(ClosureObject {
            refs: super::pending::decode_refs(&key, &refs)?,
            key,
            kind: row.try_get(1).context("decode kind")?,
            nar_size: row.try_get(3).context("decode nar_size")?,
            file_size: row.try_get(4).context("decode file_size")?,
            file_hash: row.try_get(5).context("decode file_hash")?,
        });
    }
    for chunk in objects.chunks(chunk_rows(db.backend(), 8)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(1 + i * 8, 8)))
            .collect();
        let sql = format!(
            "INSERT INTO objects (key, kind, nar_size, file_size, file_hash, created_at, \
             touched_at, touched_epoch) VALUES {} ON CONFLICT (key) DO UPDATE SET \
             touched_at = excluded.touched_at, touched_epoch = excluded.touched_epoch, \
             marked_epoch = NULL, marked_at = NULL, \
             nar_size = COALESCE(excluded.nar_size, objects.nar_size), \
             file_size = COALESCE(excluded.file_size, objects.file_size), \
             file_hash = COALESCE(excluded.file_hash, objects.file_hash)",
            values.join(", ")
        );
        let mut query = sqlx::query(trusted_sql(sql));
        for o in chunk {
            query = query
                .bind(o.key.clone())
                .bind(o.kind)
                .bind(o.nar_size)
                .bind(o.file_size)
                .bind(o.file_hash.clone())
                .bind(now)
                .bind(now)
                .bind(epoch);
        }
        query.execute(&mut *tx).await.context("commit objects")?;
    }
    let edges: Vec<(&str, &str)> = objects
        .iter()
        .flat_map(|o| o.refs.iter().map(move |r| (o.key.as_str(), r.as_str())))
        .collect();
    for chunk in edges.chunks(chunk_rows(db.backend(), 2)) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(1 + i * 2, 2)))
            .collect();
        let sql = format!(
            "INSERT INTO refs (from_key, to_key) VALUES {} ON CONFLICT DO NOTHING",
            values.join(", ")
        );
        let mut query = sqlx::query(trusted_sql(sql));
        for (from, to) in chunk {
            query = query.bind(*from).bind(*to);
        }
        query.execute(&mut *tx).await.context("commit references")?;
    }
    sqlx::query(
        "INSERT INTO closures (key, created_at, updated_at, last_session) VALUES ($1, $2, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET updated_at = excluded.updated_at, \
         last_session = excluded.last_session",
    )
    .bind(&closure)
    .bind(now)
    .bind(id)
    .execute(&mut *tx)
    .await
    .context("record the closure root")?;
    super::journal::record_commit(&mut tx, id, now).await?;
    // Deleting the session would drop these rows by cascade, and the uploads with them.
    let abandoned =
        sqlx::query("DELETE FROM multipart_uploads WHERE pending_id = $1 RETURNING key, upload_id")
            .bind(id)
            .fetch_all(&mut *tx)
            .await
            .context("take the session's open multipart uploads")?
            .iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect::<Result<Vec<(String, String)>, sqlx::Error>>()
            .context("decode multipart uploads")?;
    sqlx::query("DELETE FROM pending_closures WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await
        .context("remove the pending closure")?;
    tx.commit().await.context("commit the closure")?;
    Ok(Some(Committed {
        abandoned_uploads: abandoned,
    }))
}

/// Whether session `id` committed the root that holds it now: a commit retried after its
/// answer was lost finds its session gone but its root here. (A later session of the same
/// root takes the root over; then a retry of the first is told 404, as before.)
pub async fn was_committed(db: &Db, id: i64) -> Result<bool, DbError> {
    let row = sqlx::query("SELECT 1 FROM closures WHERE last_session = $1")
        .bind(id)
        .fetch_optional(db.pool())
        .await
        .context("look up a committed session")?;
    Ok(row.is_some())
}
