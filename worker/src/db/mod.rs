//! The database: PostgreSQL in production, SQLite for `larder serve`'s embedded default.
//!
//! Both run the same schema (`worker/migrations/{postgres,sqlite}`) and every query is
//! written once through sqlx's `Any` driver; the few dialect differences (row locks,
//! advisory locks) branch on [`Backend`]. Times are Unix milliseconds.

pub mod closures;
pub mod fsck;
pub mod gc;
mod gc_live;
pub mod gc_stats;
mod gc_sweep;
mod gc_tables;
pub mod index_epochs;
pub mod journal;
pub mod lease;
pub mod pending;
mod pending_commit;
pub mod pending_files;
pub mod pending_sign;
pub mod pending_start;
pub mod pins;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor, Row};
use thiserror::Error;

static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("migrations/postgres");
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("migrations/sqlite");

/// Why a database operation failed.
#[derive(Debug, Error)]
pub enum DbError {
    #[error("database URL {0:?} is neither postgres:// nor sqlite://")]
    UnsupportedUrl(String),
    #[error("cannot connect to the database: {0}")]
    Connect(#[source] sqlx::Error),
    #[error(
        "cannot connect to the database {url} (tried for {}s): {cause}",
        CONNECT_TIMEOUT.as_secs()
    )]
    Unreachable { url: String, cause: String },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    #[error(
        "the database schema is at version {found}, newer than this larder knows ({known}); \
         upgrade larder before pointing it at this database"
    )]
    SchemaTooNew { found: i64, known: i64 },
    #[error(
        "the database schema is at version {found}, older than this larder needs \
             ({known}); run `larder migrate` (or `larder serve --migrate`)"
    )]
    SchemaTooOld { found: i64, known: i64 },
    #[error("the database holds an invalid {what}: {reason}")]
    Corrupt { what: String, reason: String },
    #[error("database query failed ({context}): {source}")]
    Query {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot take the {name} lock file beside the database: {source}")]
    Lock {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// How long a connection is waited for (a database starting beside the worker is
/// waited for; after that the worker gives up).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the database cannot be reached, from one direct connection attempt.
async fn why_unreachable(options: &AnyConnectOptions) -> String {
    let attempt = <sqlx::AnyConnection as sqlx::Connection>::connect_with(options);
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        // sqlx's message already ends with its cause's.
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(_)) => "it accepts connections only now".into(),
        Err(_) => "no answer".into(),
    }
}

/// Attaches what was being done to a sqlx error.
pub(crate) trait QueryContext<T> {
    fn context(self, context: &'static str) -> Result<T, DbError>;
}

impl<T> QueryContext<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query { context, source })
    }
}

/// Which SQL engine is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// PostgreSQL: row locks and advisory locks available.
    Postgres,
    /// SQLite: one writer at a time, so writes are already serialised.
    Sqlite,
}

/// A connection pool plus what it is connected to.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// The SQLite database file (`None` on PostgreSQL and for in-memory databases).
    file: Option<std::sync::Arc<std::path::PathBuf>>,
}

impl Db {
    /// Connects to `url` (`postgres://…` or `sqlite://path`; the SQLite file is created).
    pub async fn connect(url: &str) -> Result<Db, DbError> {
        Self::open(url, "rwc").await
    }

    /// Connects to `url` like [`Db::connect`], but a missing SQLite file is an error.
    pub async fn connect_existing(url: &str) -> Result<Db, DbError> {
        Self::open(url, "rw").await
    }

    /// `sqlite_mode` is SQLite's `mode=` when the URL has none.
    async fn open(url: &str, sqlite_mode: &str) -> Result<Db, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            return Err(DbError::UnsupportedUrl(redact(url)));
        };
        let url = match backend {
            Backend::Sqlite if !url.contains("mode=") => {
                let sep = if url.contains('?') { '&' } else { '?' };
                format!("{url}{sep}mode={sqlite_mode}")
            }
            _ => url.to_string(),
        };
        let options = AnyConnectOptions::from_str(&url).map_err(DbError::Connect)?;
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Postgres => 32,
                Backend::Sqlite => 8,
            })
            .acquire_timeout(CONNECT_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL lets readers run beside the writer; the timeout makes a
                        // second writer wait instead of failing with SQLITE_BUSY.
                        // FULL syncs the WAL at every commit: a push told "committed"
                        // survives a power loss too, not only a killed process (NORMAL
                        // may drop the last commits). It costs one fsync per write
                        // transaction, beside the several each uploaded object already
                        // costs the directory backend (docs/benchmarks.md).
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                             PRAGMA busy_timeout = 30000; PRAGMA foreign_keys = ON;",
                        )
                        .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options.clone())
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            // The pool retries refused connections until its timeout, then says only
            // that it timed out: one more attempt tells why.
            Err(sqlx::Error::PoolTimedOut) => {
                return Err(DbError::Unreachable {
                    url: redact(&url),
                    cause: why_unreachable(&options).await,
                })
            }
            Err(e) => return Err(DbError::Connect(e)),
        };
        let file = match backend {
            Backend::Sqlite => sqlite_file(&url).map(std::sync::Arc::new),
            Backend::Postgres => None,
        };
        Ok(Db {
            pool,
            backend,
            file,
        })
    }

    /// The SQLite database file, if there is one.
    pub fn sqlite_file(&self) -> Option<&std::path::Path> {
        self.file.as_deref().map(std::path::PathBuf::as_path)
    }

    /// The pool, for queries.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which engine this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn migrator(&self) -> &'static Migrator {
        match self.backend {
            Backend::Postgres => &POSTGRES_MIGRATIONS,
            Backend::Sqlite => &SQLITE_MIGRATIONS,
        }
    }

    /// Applies every embedded migration the database lacks.
    pub async fn migrate(&self) -> Result<(), DbError> {
        self.check_not_newer().await?;
        self.migrator()
            .run(&self.pool)
            .await
            .map_err(DbError::Migrate)
    }

    /// Fails unless the schema is exactly the one this binary was built for.
    pub async fn check_schema(&self) -> Result<(), DbError> {
        let found = self.check_not_newer().await?;
        let known = self.known_version();
        if found < known {
            return Err(DbError::SchemaTooOld { found, known });
        }
        Ok(())
    }

    fn known_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Current schema version (0 for an empty database); errors if it is newer than known.
    async fn check_not_newer(&self) -> Result<i64, DbError> {
        let exists = match self.backend {
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables \
                                  WHERE table_name = '_sqlx_migrations'"
            }
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master \
                                WHERE type = 'table' AND name = '_sqlx_migrations'"
            }
        };
        let count: i64 = sqlx::query(exists)
            .fetch_one(&self.pool)
            .await
            .and_then(|row| row.try_get(0))
            .context("look for the migrations table")?;
        if count == 0 {
            return Ok(0);
        }
        let found: Option<i64> =
            sqlx::query("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(&self.pool)
                .await
                .and_then(|row| row.try_get(0))
                .context("read the schema version")?;
        let found = found.unwrap_or(0);
        let known = self.known_version();
        if found > known {
            return Err(DbError::SchemaTooNew { found, known });
        }
        Ok(found)
    }
}

/// SQL assembled only from constant fragments and `$n` placeholders, never from input
/// (values always go through bind parameters).
pub(crate) fn trusted_sql(text: String) -> sqlx::AssertSqlSafe<String> {
    sqlx::AssertSqlSafe(text)
}

/// The file of a `sqlite://path` or `sqlite:path` URL (options after `?` dropped);
/// `None` for other URLs and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite:")?;
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| std::path::PathBuf::from(path))
}

/// Current time as Unix milliseconds.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn sqlite_urls_name_their_file() {
        for (url, file) in [
            ("sqlite:///var/lib/larder.db", Some("/var/lib/larder.db")),
            ("sqlite://larder.db?mode=rw", Some("larder.db")),
            ("sqlite:x.db", Some("x.db")),
            ("sqlite::memory:", None),
            ("postgres://db/larder", None),
        ] {
            assert_eq!(sqlite_file(url), file.map(PathBuf::from), "{url}");
        }
    }
}
