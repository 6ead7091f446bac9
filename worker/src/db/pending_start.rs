//! Starting an upload session in two steps, so the caller can presign uploads while the
//! database records the session: [`begin`] creates the session, locks and stamps the
//! present objects (what decides which ones must be uploaded); [`Starting::record`]
//! writes the pending objects; [`Starting::commit`] records the multipart uploads the
//! caller created meanwhile and commits, all in one transaction.

use std::collections::HashSet;

use sqlx::{Any, Row, Transaction};

use super::pending::{begin_push, chunk_rows, placeholders, touch_present, ClosureObject, Started};
use super::{trusted_sql, Backend, Db, DbError, QueryContext};

/// A session being started: its transaction is open and holds the locks a push holds.
#[derive(Debug)]
pub struct Starting {
    tx: Transaction<'static, Any>,
    backend: Backend,
    sorted: Vec<ClosureObject>,
    trusted: HashSet<String>,
    /// Session id (valid once committed).
    pub id: i64,
    /// Start time (Unix ms).
    pub started_at: i64,
    /// Keys the client must upload (absent, or marked by GC and so not to be trusted).
    pub needs_upload: Vec<String>,
}

/// Creates session rows for `closure_key` and decides what must be uploaded.
pub async fn begin(
    db: &Db,
    closure_key: &str,
    objects: &[ClosureObject],
    now: i64,
) -> Result<Starting, DbError> {
    let (mut tx, epoch) = begin_push(db).await?;
    let id: i64 = sqlx::query(
        "INSERT INTO pending_closures (closure_key, started_at, epoch) VALUES ($1, $2, $3) \
         RETURNING id",
    )
    .bind(closure_key)
    .bind(now)
    .bind(epoch)
    .fetch_one(&mut *tx)
    .await
    .and_then(|row| row.try_get(0))
    .context("create the pending closure")?;

    let mut sorted: Vec<ClosureObject> = objects.to_vec();
    sorted.sort_by(|a, b| a.key.cmp(&b.key));
    sorted.dedup_by(|a, b| a.key == b.key);
    let keys: Vec<&str> = sorted.iter().map(|o| o.key.as_str()).collect();
    let trusted = touch_present(&mut tx, db.backend(), &keys, epoch, now).await?;
    let needs_upload = sorted
        .iter()
        .filter(|o| !trusted.contains(&o.key))
        .map(|o| o.key.clone())
        .collect();
    Ok(Starting {
        tx,
        backend: db.backend(),
        sorted,
        trusted,
        id,
        started_at: now,
        needs_upload,
    })
}

impl Starting {
    /// Writes the session's pending objects.
    pub async fn record(&mut self) -> Result<(), DbError> {
        insert_pending_objects(
            &mut self.tx,
            self.backend,
            self.id,
            &self.sorted,
            &self.trusted,
        )
        .await
    }

    /// Records the multipart uploads created for the session (`(key, upload_id)`) and
    /// commits. Dropped instead, nothing of the session remains.
    pub async fn commit(mut self, multiparts: &[(String, String)]) -> Result<Started, DbError> {
        for chunk in multiparts.chunks(chunk_rows(self.backend, 4)) {
            let rows: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(1 + i * 4, 4)))
                .collect();
            let sql = format!(
                "INSERT INTO multipart_uploads (upload_id, key, pending_id, created_at) VALUES {}",
                rows.join(", ")
            );
            let mut query = sqlx::query(trusted_sql(sql));
            for (key, upload_id) in chunk {
                query = query
                    .bind(upload_id.as_str())
                    .bind(key.as_str())
                    .bind(self.id)
                    .bind(self.started_at);
            }
            query
                .execute(&mut *self.tx)
                .await
                .context("record multipart uploads")?;
        }
        self.tx
            .commit()
            .await
            .context("commit the pending closure")?;
        Ok(Started {
            id: self.id,
            started_at: self.started_at,
            needs_upload: self.needs_upload,
        })
    }
}

/// One `pending_objects` row, as the JSON PostgreSQL's `json_to_recordset` reads.
#[derive(serde::Serialize)]
struct PendingRow<'a> {
    key: &'a str,
    kind: i64,
    refs: String,
    nar_size: Option<i64>,
    file_size: Option<i64>,
    file_hash: Option<&'a str>,
    needs_upload: i64,
}

/// Records the objects of session `id`; `trusted` are those already present.
async fn insert_pending_objects(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    id: i64,
    sorted: &[ClosureObject],
    trusted: &std::collections::HashSet<String>,
) -> Result<(), DbError> {
    let refs = |o: &ClosureObject| serde_json::to_string(&o.refs).unwrap_or_else(|_| "[]".into());
    if backend == Backend::Postgres {
        // One statement for the whole closure, for the reason given at touch_present_pg.
        let rows: Vec<PendingRow> = sorted
            .iter()
            .map(|o| PendingRow {
                key: &o.key,
                kind: o.kind,
                refs: refs(o),
                nar_size: o.nar_size,
                file_size: o.file_size,
                file_hash: o.file_hash.as_deref(),
                needs_upload: i64::from(!trusted.contains(&o.key)),
            })
            .collect();
        let rows = serde_json::to_string(&rows).map_err(|e| DbError::Query {
            context: "encode pending objects",
            source: sqlx::Error::Encode(Box::new(e)),
        })?;
        sqlx::query(
            "INSERT INTO pending_objects (pending_id, key, kind, refs, nar_size, file_size, \
             file_hash, needs_upload) SELECT $1, r.key, r.kind, r.refs, r.nar_size, \
             r.file_size, r.file_hash, r.needs_upload FROM json_to_recordset($2::json) AS \
             r(key TEXT, kind BIGINT, refs TEXT, nar_size BIGINT, file_size BIGINT, \
             file_hash TEXT, needs_upload BIGINT)",
        )
        .bind(id)
        .bind(rows)
        .execute(&mut **tx)
        .await
        .context("record pending objects")?;
        return Ok(());
    }
    for chunk in sorted.chunks(chunk_rows(backend, 8)) {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(1 + i * 8, 8)))
            .collect();
        let sql = format!(
            "INSERT INTO pending_objects (pending_id, key, kind, refs, nar_size, file_size, \
             file_hash, needs_upload) VALUES {}",
            rows.join(", ")
        );
        let mut query = sqlx::query(trusted_sql(sql));
        for object in chunk {
            query = query
                .bind(id)
                .bind(object.key.clone())
                .bind(object.kind)
                .bind(refs(object))
                .bind(object.nar_size)
                .bind(object.file_size)
                .bind(object.file_hash.clone())
                .bind(i64::from(!trusted.contains(&object.key)));
        }
        query
            .execute(&mut **tx)
            .await
            .context("record pending objects")?;
    }
    Ok(())
}
