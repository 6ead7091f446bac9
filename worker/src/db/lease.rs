//! A named run lock across every process sharing a database: a PostgreSQL session
//! advisory lock (dies with the connection), or on SQLite an exclusive lock on a file
//! beside the database (the kernel drops it when its holder dies, however it dies).
//!
//! SQLite in WAL mode only works for processes on one machine, so a file lock reaches
//! every process that can open the database. (A lease row with an expiry, as before,
//! kept the lock for hours after a killed `larder gc`: every run until then failed.)
//! An in-memory SQLite database has no file; it keeps a lease row in `meta`.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use super::{now_ms, Backend, Db, DbError, QueryContext};

/// Which lock: the advisory lock id and the SQLite lease's `meta` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockName {
    /// PostgreSQL advisory lock id.
    pub id: i64,
    /// Name of the SQLite lock: the file `{database}.{lease}.lock`, or (in memory) the
    /// `meta` row holding the lease's expiry (Unix ms).
    pub lease: &'static str,
    /// How long an in-memory SQLite lease lasts.
    pub lease_ms: i64,
}

/// A held lock; call [`Lease::release`] when done (dropping it also releases a file
/// lock).
#[derive(Debug)]
pub enum Lease {
    /// PostgreSQL session lock on this connection.
    Postgres(PoolConnection<Any>, LockName),
    /// SQLite file lock, held while the file is open.
    File(File),
    /// In-memory SQLite lease row.
    Sqlite(Db, LockName),
}

impl Lease {
    /// Takes the lock, or `None` when someone else holds it.
    pub async fn acquire(db: &Db, name: LockName) -> Result<Option<Lease>, DbError> {
        match (db.backend(), db.sqlite_file()) {
            (Backend::Postgres, _) => {
                let mut conn = db.pool().acquire().await.context("connect for a lock")?;
                let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
                    .bind(name.id)
                    .fetch_one(&mut *conn)
                    .await
                    .and_then(|r| r.try_get(0))
                    .context("try a run lock")?;
                Ok(got.then_some(Lease::Postgres(conn, name)))
            }
            (Backend::Sqlite, Some(database)) => {
                let path = lock_file(database, name);
                let file = tokio::task::spawn_blocking(move || try_lock(&path))
                    .await
                    .map_err(|e| lock_error(name, std::io::Error::other(e)))?
                    .map_err(|e| lock_error(name, e))?;
                Ok(file.map(Lease::File))
            }
            (Backend::Sqlite, None) => {
                let now = now_ms();
                let taken = sqlx::query(
                    "INSERT INTO meta (name, value) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value \
                     WHERE meta.value < $3",
                )
                .bind(name.lease)
                .bind(now + name.lease_ms)
                .bind(now)
                .execute(db.pool())
                .await
                .context("take a lease")?
                .rows_affected();
                Ok((taken == 1).then(|| Lease::Sqlite(db.clone(), name)))
            }
        }
    }

    /// Gives the lock back.
    pub async fn release(self) -> Result<(), DbError> {
        match self {
            Lease::Postgres(mut conn, name) => {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(name.id)
                    .execute(&mut *conn)
                    .await
                    .context("release a run lock")?;
            }
            // Closing the file releases the lock.
            Lease::File(file) => drop(file),
            Lease::Sqlite(db, name) => {
                sqlx::query("UPDATE meta SET value = 0 WHERE name = $1")
                    .bind(name.lease)
                    .execute(db.pool())
                    .await
                    .context("release a lease")?;
            }
        }
        Ok(())
    }
}

/// The lock file of `name` for the SQLite database at `database`.
fn lock_file(database: &Path, name: LockName) -> PathBuf {
    let mut file = database.as_os_str().to_owned();
    file.push(format!(".{}.lock", name.lease));
    PathBuf::from(file)
}

/// Opens (creating) `path` and takes an exclusive lock on it without waiting: the open
/// file while it holds the lock, `None` when another open file holds it.
fn try_lock(path: &Path) -> std::io::Result<Option<File>> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => Err(e),
    }
}

fn lock_error(name: LockName, e: std::io::Error) -> DbError {
    DbError::Lock {
        name: name.lease,
        source: e,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code

    use super::*;

    const NAME: LockName = LockName {
        id: 1,
        lease: "test_lease",
        lease_ms: 1000,
    };

    #[test]
    fn the_lock_file_sits_beside_the_database() {
        assert_eq!(
            lock_file(Path::new("/data/larder.db"), NAME),
            Path::new("/data/larder.db.test_lease.lock")
        );
    }

    #[test]
    fn a_file_lock_is_exclusive_until_its_file_closes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = try_lock(&path).unwrap().unwrap();
        // Another open file description, as another process would have.
        assert!(try_lock(&path).unwrap().is_none());
        drop(held);
        assert!(try_lock(&path).unwrap().is_some());
    }
}
