//! A named run lock across every process sharing a database: a PostgreSQL session
//! advisory lock (dies with the connection), or on SQLite a lease row in `meta` (expires
//! if its holder dies without releasing it).

use sqlx::pool::PoolConnection;
use sqlx::{Any, Row};

use super::{now_ms, Backend, Db, DbError, QueryContext};

/// Which lock: the advisory lock id and the SQLite lease's `meta` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockName {
    /// PostgreSQL advisory lock id.
    pub id: i64,
    /// `meta` row holding the SQLite lease's expiry (Unix ms).
    pub lease: &'static str,
    /// How long a SQLite lease lasts.
    pub lease_ms: i64,
}

/// A held lock; call [`Lease::release`] when done.
#[derive(Debug)]
pub enum Lease {
    /// PostgreSQL session lock on this connection.
    Postgres(PoolConnection<Any>, LockName),
    /// SQLite lease row.
    Sqlite(Db, LockName),
}

impl Lease {
    /// Takes the lock, or `None` when someone else holds it.
    pub async fn acquire(db: &Db, name: LockName) -> Result<Option<Lease>, DbError> {
        match db.backend() {
            Backend::Postgres => {
                let mut conn = db.pool().acquire().await.context("connect for a lock")?;
                let got: bool = sqlx::query("SELECT pg_try_advisory_lock($1)")
                    .bind(name.id)
                    .fetch_one(&mut *conn)
                    .await
                    .and_then(|r| r.try_get(0))
                    .context("try a run lock")?;
                Ok(got.then_some(Lease::Postgres(conn, name)))
            }
            Backend::Sqlite => {
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
