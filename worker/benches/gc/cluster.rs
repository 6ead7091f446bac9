//! The PostgreSQL cluster the benchmark's databases live in.

use sqlx::{Connection, Executor, PgConnection, Row};

use larder_e2e::postgres::Postgres;

pub fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

pub async fn database_size(admin_url: &str, name: &str) -> String {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query("SELECT pg_size_pretty(pg_database_size($1))")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

/// The PostgreSQL cluster the databases live in.
pub struct Cluster {
    pub admin_url: String,
    keep: bool,
}

impl Cluster {
    /// `LARDER_BENCH_PG`, else the e2e harness's throwaway cluster.
    pub async fn open() -> Cluster {
        let admin_url = match std::env::var("LARDER_BENCH_PG") {
            Ok(url) => url,
            Err(_) => tokio::task::spawn_blocking(Postgres::shared)
                .await
                .unwrap()
                .admin_url(),
        };
        Cluster {
            admin_url,
            keep: std::env::var("LARDER_BENCH_KEEP").is_ok_and(|v| v == "1"),
        }
    }

    /// Creates an empty database and returns its URL.
    pub async fn database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", std::process::id());
        let mut conn = PgConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap();
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }

    /// Drops a database (it holds gigabytes), unless asked to keep it.
    pub async fn finish(&self, name: &str) {
        if self.keep {
            println!("kept database {name}");
            return;
        }
        let mut conn = PgConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    }
}

pub async fn cancel_backends(admin_url: &str, name: &str) {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
}
