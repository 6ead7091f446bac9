//! One collector at a time across every worker sharing a database.

use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use crate::db::{now_ms, Backend, Db, DbError, QueryContext};

/// Advisory lock id of GC runs (distinct from the push/epoch lock).
const RUN_LOCK_ID: i64 = 0x6c61_7264_6572_7275; // "larderru"
/// How long a SQLite lease lasts if its holder dies without releasing it.
const LEASE_MS: i64 = 6 * 3600 * 1000;

/// A held run lock; call [`RunLock::release`] when done.
#[derive(Debug)]
pub enum RunLock {
    /// PostgreSQL session lock: dies with the connection if the process does.
    Postgres(PoolConnection<Any>),
    /// SQLite lease row in `meta`.
    Sqlite(Db),
}

impl RunLock {
    /// Takes the lock, or `None` when another run holds it.
    pub async fn acquire(db: &Db) -> Result<Option<RunLock>, DbError> {
        match db.backend() {
            Backend::Postgres => {
                let mut conn = db
                    .pool()
                    .acquire()
                    .await
                    .context("connect for the run lock")?;
                let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
                    .bind(RUN_LOCK_ID)
                    .fetch_one(&mut *conn)
                    .await
                    .and_then(|r| r.try_get(0))
                    .context("try the GC run lock")?;
                Ok(got.then_some(RunLock::Postgres(conn)))
            }
            Backend::Sqlite => {
                let now = now_ms();
                let taken = sqlx::query(
                    "INSERT INTO meta (name, value) VALUES ('gc_lease', $1) \
                     ON CONFLICT (name) DO UPDATE SET value = excluded.value \
                     WHERE meta.value < $2",
                )
                .bind(now + LEASE_MS)
                .bind(now)
                .execute(db.pool())
                .await
                .context("take the GC lease")?
                .rows_affected();
                Ok((taken == 1).then(|| RunLock::Sqlite(db.clone())))
            }
        }
    }

    /// Gives the lock back.
    pub async fn release(self) -> Result<(), DbError> {
        match self {
            RunLock::Postgres(mut conn) => {
                sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(RUN_LOCK_ID)
                    .execute(&mut *conn)
                    .await
                    .context("release the GC run lock")?;
            }
            RunLock::Sqlite(db) => {
                sqlx::query("UPDATE meta SET value = 0 WHERE name = 'gc_lease'")
                    .execute(db.pool())
                    .await
                    .context("release the GC lease")?;
            }
        }
        Ok(())
    }
}
