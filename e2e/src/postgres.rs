//! A throwaway PostgreSQL cluster per test binary, one database per test.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::process::{free_port, run, temp_dir, unique_name, Service};
use crate::tools::running_as_root;

const HINT: &str = "install Debian's `postgresql` package (e2e/tools/install-all.sh does)";

/// The running cluster: where it listens.
#[derive(Debug)]
pub struct Postgres {
    port: u16,
    _service: Mutex<Service>,
}

impl Postgres {
    /// The cluster shared by every test in this binary, started on first use.
    pub fn shared() -> &'static Postgres {
        static CLUSTER: OnceLock<Postgres> = OnceLock::new();
        CLUSTER.get_or_init(Postgres::start)
    }

    fn start() -> Postgres {
        let bin_dir = pg_bin_dir();
        let dir = temp_dir("postgres");
        let data = dir.join("data");
        let port = free_port();
        // initdb and postgres refuse to run as root: hand the directory to `postgres`.
        let as_user = |program: PathBuf| {
            if running_as_root() {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", "postgres", "--"]).arg(program);
                cmd
            } else {
                Command::new(program)
            }
        };
        if running_as_root() {
            run(
                "chown the postgres test directory",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(&dir),
            );
        }
        run(
            "initdb (postgres)",
            as_user(bin_dir.join("initdb"))
                .args([
                    "-A",
                    "trust",
                    "-U",
                    "postgres",
                    "-E",
                    "UTF8",
                    "--no-sync",
                    "-D",
                ])
                .arg(&data),
        );
        let mut cmd = as_user(bin_dir.join("postgres"));
        cmd.arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(&dir)
            // Durability is not what these tests measure; speed is welcome.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=400"]);
        let mut service = Service::start("postgres", cmd, &dir.join("postgres.log"));
        let isready = bin_dir.join("pg_isready");
        service.wait_until("accepting connections", Duration::from_secs(60), || {
            Command::new(&isready)
                .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "postgres"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false)
        });
        Postgres {
            port,
            _service: Mutex::new(service),
        }
    }

    /// URL of the maintenance database, for creating others.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Creates a fresh, empty database for `test` and returns its URL.
    pub fn database(&self, test: &str) -> String {
        let name = unique_name(test).replace('-', "_");
        run(
            "create a test database",
            Command::new(pg_bin_dir().join("psql"))
                .args(["-q", "-v", "ON_ERROR_STOP=1", "-d", &self.admin_url(), "-c"])
                .arg(format!("CREATE DATABASE \"{name}\"")),
        );
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}

/// A fresh database for `test` on the shared cluster.
pub fn database(test: &str) -> String {
    Postgres::shared().database(test)
}

/// Folder holding initdb, postgres, pg_isready and psql.
fn pg_bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LARDER_PG_BIN") {
        return PathBuf::from(dir);
    }
    // Debian keeps server binaries out of PATH, one folder per major version.
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|dir| {
            dir.filter_map(|e| e.ok().map(|e| e.path().join("bin")))
                .filter(|p| p.join("initdb").is_file())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("no PostgreSQL server under /usr/lib/postgresql and LARDER_PG_BIN unset; {HINT}")
    })
}
