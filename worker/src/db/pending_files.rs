//! Late file declarations: a client that starts a session before it has compressed
//! anything declares each object's stored hash and size once it knows them, and gets
//! a presigned URL bound to that hash (`upload::files`).

use sqlx::Row;

use super::{Db, DbError, QueryContext};

/// One object whose stored bytes a client declares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileDeclaration {
    /// Object key.
    pub key: String,
    /// `sha256:<base32>` of the bytes to be stored.
    pub file_hash: String,
    /// Number of bytes to be stored.
    pub file_size: i64,
}

/// A declared object the session still waits for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Object key.
    pub key: String,
    /// Object kind code.
    pub kind: i64,
    /// Uncompressed NAR size, for NARs.
    pub nar_size: Option<i64>,
}

/// What a declaration found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Declaration {
    /// The session does not exist (never started, completed or cleaned up).
    NoSession,
    /// These keys are not objects the session waits for (unknown, or present already).
    NotPending(Vec<String>),
    /// Recorded; `complete` commits the objects with these hashes and sizes.
    Recorded(Vec<Declared>),
}

/// Records the hash and size of objects session `id` waits for, all or none.
pub async fn declare(db: &Db, id: i64, files: &[FileDeclaration]) -> Result<Declaration, DbError> {
    let mut tx = db
        .pool()
        .begin()
        .await
        .context("begin a file declaration")?;
    // Writes come first: on SQLite a transaction that read first cannot become a writer
    // once another commit moved past its snapshot (SQLITE_BUSY_SNAPSHOT, which the busy
    // timeout does not wait out), while one that starts with a write waits its turn.
    let mut declared = Vec::with_capacity(files.len());
    let mut missing = Vec::new();
    for file in files {
        // One statement per object: a client declares a path's few objects at a time.
        let row = sqlx::query(
            "UPDATE pending_objects SET file_hash = $3, file_size = $4 \
             WHERE pending_id = $1 AND key = $2 AND needs_upload = 1 \
             RETURNING kind, nar_size",
        )
        .bind(id)
        .bind(file.key.as_str())
        .bind(file.file_hash.as_str())
        .bind(file.file_size)
        .fetch_optional(&mut *tx)
        .await
        .context("record a declared file")?;
        match row {
            Some(row) => declared.push(Declared {
                key: file.key.clone(),
                kind: row.try_get(0).context("decode kind")?,
                nar_size: row.try_get(1).context("decode nar_size")?,
            }),
            None => missing.push(file.key.clone()),
        }
    }
    // Asked after the writes, in the same transaction (see above); an absent session
    // matched no row.
    if !super::pending::session_exists(&mut *tx, id).await? {
        return Ok(Declaration::NoSession);
    }
    if !missing.is_empty() {
        // Dropping the transaction rolls back what was recorded: all or none.
        return Ok(Declaration::NotPending(missing));
    }
    tx.commit().await.context("commit a file declaration")?;
    Ok(Declaration::Recorded(declared))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code

    use super::*;
    use crate::db::pending::{self, ClosureObject};

    /// Declarations of several sessions at once on SQLite all succeed: none may fail
    /// with "database is locked" (SQLITE_BUSY_SNAPSHOT: a transaction that read first
    /// cannot become a writer once another commit moved past its snapshot, and the busy
    /// timeout does not help). `larder push` declares each path's files in its own
    /// request, four at a time.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_declarations_on_sqlite_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("larder.db").display());
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let mut tasks = Vec::new();
        for session in 0..8 {
            let keys: Vec<String> = (0..30)
                .map(|i| format!("nar/{session:02}{i:02}{}.nar.zst", "0".repeat(48)))
                .collect();
            let objects: Vec<ClosureObject> = keys
                .iter()
                .map(|key| ClosureObject {
                    key: key.clone(),
                    kind: 1,
                    refs: Vec::new(),
                    nar_size: Some(10),
                    file_size: None,
                    file_hash: None,
                })
                .collect();
            let started = pending::start(&db, &keys[0], &objects, 1).await.unwrap();
            let db = db.clone();
            tasks.push(tokio::spawn(async move {
                for key in keys {
                    let file = FileDeclaration {
                        key,
                        file_hash: format!("sha256:{}", "1".repeat(52)),
                        file_size: 10,
                    };
                    let declared = declare(&db, started.id, &[file]).await;
                    assert!(
                        matches!(declared, Ok(Declaration::Recorded(_))),
                        "{declared:?}"
                    );
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    }
}
