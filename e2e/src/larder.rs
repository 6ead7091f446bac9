//! A real `larder serve` process, on the embedded default or on PostgreSQL and Garage.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::garage::Bucket;
use crate::process::{free_port, temp_dir, unique_name, Service};

/// Where the worker keeps its data.
#[derive(Debug, Clone)]
pub enum Backend {
    /// `larder serve --data-dir DIR`: SQLite and a local folder.
    Embedded,
    /// PostgreSQL at this URL and a Garage bucket.
    Postgres {
        /// Database URL.
        database: String,
        /// Bucket and credentials.
        bucket: Bucket,
    },
}

/// A running worker.
#[derive(Debug)]
pub struct Worker {
    /// Base URL (`http://127.0.0.1:PORT`).
    pub url: String,
    /// Its data dir (embedded database, objects, generated key and token).
    pub data_dir: PathBuf,
    /// A token with push and admin scopes.
    pub token: String,
    /// A token with the read scope only (PostgreSQL backend; empty on the embedded one).
    pub read_token: String,
    /// Its public key, `name:base64`.
    pub public_key: String,
    /// What it stores into.
    pub backend: Backend,
    port: u16,
    extra: Vec<String>,
    /// How many times it was started (names each life's log).
    lives: u32,
    /// The running process; `None` between [`Worker::kill`] and [`Worker::restart`].
    service: Option<Service>,
}

/// The `larder` binary: `LARDER_BIN`, or the workspace's debug build.
pub fn larder_bin() -> PathBuf {
    crate::tools::workspace_bin("LARDER_BIN", "debug", "larder", "cargo build --bin larder")
}

impl Worker {
    /// One worker on each backend, for tests that ask both the same thing: the embedded
    /// default (SQLite and a folder; test name `{test}-dir`) and PostgreSQL with Garage
    /// (`{test}-s3`).
    pub fn on_both_backends(test: &str) -> Vec<(&'static str, Worker)> {
        let embedded = Worker::start(&format!("{test}-dir"), Backend::Embedded, &[]);
        let name = format!("{test}-s3");
        let s3 = Worker::start(
            &name,
            Backend::Postgres {
                database: crate::postgres::database(&name),
                bucket: crate::garage::bucket(&name),
            },
            &[],
        );
        vec![("directory", embedded), ("S3", s3)]
    }

    /// The worker's process id (to read its CPU time from /proc).
    pub fn pid(&self) -> u32 {
        self.running().pid()
    }

    fn running(&self) -> &Service {
        self.service
            .as_ref()
            .expect("the worker is running (it was killed and not restarted)")
    }

    /// The flags that give a `larder` subcommand (gc, fsck, index …) this worker's
    /// database and storage: its data dir, and on PostgreSQL the database and bucket.
    pub fn store_args(&self, cmd: &mut Command) {
        cmd.arg("--data-dir").arg(&self.data_dir);
        if let Backend::Postgres { database, bucket } = &self.backend {
            cmd.args(["--database", database])
                .args(bucket.larder_args());
        }
    }

    /// Starts a worker for `test` on `backend`, with extra `serve` flags.
    pub fn start(test: &str, backend: Backend, extra: &[&str]) -> Worker {
        let data_dir = temp_dir(&format!("worker-{}", unique_name(test)));
        let port = free_port();
        let token = match &backend {
            Backend::Embedded => None,
            Backend::Postgres { .. } => {
                let token = format!("test-token-{}", unique_name(test));
                std::fs::write(
                    data_dir.join("tokens"),
                    format!("{token} push,admin,read test\nreader-{token} read reader\n"),
                )
                .expect("write tokens");
                Some(token)
            }
        };
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let service = launch(&data_dir, port, &backend, &extra, "serve.log");
        let read_token = token
            .as_ref()
            .map(|t| format!("reader-{t}"))
            .unwrap_or_default();
        let token = token.unwrap_or_else(|| {
            std::fs::read_to_string(data_dir.join("push-token"))
                .expect("the embedded default writes push-token")
                .trim()
                .to_string()
        });
        let secret = std::fs::read_to_string(data_dir.join("signing-key")).expect("signing key");
        let public_key = public_key_of(secret.trim());
        Worker {
            url: format!("http://127.0.0.1:{port}"),
            data_dir,
            token,
            read_token,
            public_key,
            backend,
            port,
            extra,
            lives: 1,
            service: Some(service),
        }
    }

    /// Kills the worker with SIGKILL, as a crash or an OOM kill would: no handler runs,
    /// nothing is flushed. Waits until the process is gone.
    pub fn kill(&mut self) {
        if let Some(mut service) = self.service.take() {
            service.kill();
        }
    }

    /// Starts the worker again on the same data dir, database, storage and port (after
    /// [`Worker::kill`]; kills a running one first). Each life logs to its own file.
    pub fn restart(&mut self) {
        self.kill();
        let log = format!("serve-{}.log", self.lives);
        self.lives += 1;
        self.service = Some(launch(
            &self.data_dir,
            self.port,
            &self.backend,
            &self.extra,
            &log,
        ));
    }

    /// `POST /api/pending_closures` with `request` and the push token: the worker's
    /// JSON answer (`id`, `pending_objects`). Panics, with the worker's words, unless
    /// the session started.
    pub async fn start_session(&self, request: &serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(format!("{}/api/pending_closures", self.url))
            .bearer_auth(&self.token)
            .json(request)
            .send()
            .await
            .expect("send POST /api/pending_closures");
        let status = response.status();
        let body = response.text().await.expect("read the answer");
        assert!(
            status.is_success(),
            "POST /api/pending_closures: {status}: {body}"
        );
        serde_json::from_str(&body).expect("a started session's answer is JSON")
    }

    /// `nix copy --from` this worker into a fresh store, signatures required; returns
    /// the store's folder.
    pub fn substitute<S: AsRef<std::ffi::OsStr>>(&self, test: &str, paths: &[S]) -> PathBuf {
        let nix = crate::nix::Nix::shared();
        let store = nix.fresh_store(test);
        crate::process::run(
            "nix copy --from the worker",
            nix.command("nix")
                .args(["copy", "--from", &self.url, "--to"])
                .arg(&store)
                .args(["--option", "trusted-public-keys", &self.public_key])
                .args(["--option", "require-sigs", "true"])
                .args(paths),
        );
        store
    }

    /// [`Worker::substitute`], then asserts each copy's NAR is the original's, byte for byte.
    pub fn substitute_and_compare(&self, test: &str, paths: &[String]) {
        let nix = crate::nix::Nix::shared();
        let store = self.substitute(test, paths);
        let store_url = store.to_str().expect("a UTF-8 temporary folder");
        for path in paths {
            let original = crate::process::run(
                "nix-store --dump",
                nix.command("nix-store").args(["--dump", path]),
            );
            let copied = crate::process::run(
                "nix store dump-path",
                nix.command("nix")
                    .args(["store", "dump-path", "--store", store_url, path]),
            );
            assert!(original == copied, "{path} differs after substitution");
        }
    }

    /// `GET /api/gc/status` with the admin token: the current or last API GC task.
    pub async fn gc_status(&self) -> serde_json::Value {
        reqwest::Client::new()
            .get(format!("{}/api/gc/status", self.url))
            .bearer_auth(&self.token)
            .send()
            .await
            .expect("send GET /api/gc/status")
            .json()
            .await
            .expect("GET /api/gc/status answers JSON")
    }

    /// The worker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        let Some(service) = &self.service else {
            return String::new();
        };
        std::fs::read_to_string(service.log()).unwrap_or_default()
    }
}

/// Runs `larder serve` on `data_dir` and `port` for `backend`, logging to `log` in the
/// data dir, and waits until it answers `/health`. The PostgreSQL backend reads its
/// tokens from `tokens` in the data dir.
fn launch(data_dir: &Path, port: u16, backend: &Backend, extra: &[String], log: &str) -> Service {
    let mut cmd = Command::new(larder_bin());
    cmd.arg("serve")
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env("LARDER_LOG", "info,larder_worker=debug");
    for var in ["LARDER_DATABASE_URL", "LARDER_STORAGE", "LARDER_TOKEN_FILE"] {
        cmd.env_remove(var);
    }
    if let Backend::Postgres { database, bucket } = backend {
        cmd.arg("--database")
            .arg(database)
            .arg("--migrate")
            .arg("--token-file")
            .arg(data_dir.join("tokens"))
            .args(bucket.larder_args());
    }
    let mut service = Service::start("larder serve", cmd, &data_dir.join(log));
    let health = format!("127.0.0.1:{port}");
    service.wait_until("GET /health answers", Duration::from_secs(60), || {
        use std::io::{Read, Write};
        std::net::TcpStream::connect(&health)
            .and_then(|mut s| {
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n")?;
                let mut answer = String::new();
                s.read_to_string(&mut answer)?;
                Ok(answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200"))
            })
            .unwrap_or(false)
    });
    service
}

/// The public key of a Nix secret key, via the real `nix key convert-secret-to-public`.
fn public_key_of(secret: &str) -> String {
    use std::io::Write;
    let mut child = crate::nix::Nix::shared()
        .command("nix")
        .args(["key", "convert-secret-to-public"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run nix key convert-secret-to-public");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(secret.as_bytes())
        .expect("write secret");
    let out = child.wait_with_output().expect("nix key output");
    assert!(
        out.status.success(),
        "nix key convert-secret-to-public failed"
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
