//! Child processes that stop when the test binary stops, and waiting for them.

use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A long-running server started for tests, killed on drop or when the test binary exits.
#[derive(Debug)]
pub struct Service {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Service {
    /// Starts `cmd` with stdout and stderr appended to `log`.
    ///
    /// Test binaries keep shared services in statics, which are never dropped, so a
    /// watchdog shell kills the server once this process is gone.
    pub fn start(name: &str, mut cmd: Command, log: &Path) -> Service {
        let out = File::create(log)
            .unwrap_or_else(|e| panic!("{name}: cannot create log {}: {e}", log.display()));
        let err = out.try_clone().expect("clone log file handle");
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {:?}: {e}", cmd.get_program()));
        watchdog(child.id());
        Service {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// The server's process id (to read its memory use from /proc).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Waits until `ready` returns true, or panics with the server's log tail.
    pub fn wait_until(&mut self, what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if ready() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "{} exited ({status}) before {what}; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "{} not ready after {timeout:?} ({what}); log {}:\n{}",
                    self.name,
                    self.log.display(),
                    log_tail(&self.log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until something accepts TCP connections on `port` at 127.0.0.1.
    pub fn wait_for_port(&mut self, port: u16, timeout: Duration) {
        self.wait_until(&format!("listening on port {port}"), timeout, || {
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills `pid` (and its process group) once the current process has exited.
fn watchdog(pid: u32) {
    let me = std::process::id();
    let script = format!(
        "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
         kill -TERM {pid} 2>/dev/null; sleep 2; kill -KILL {pid} 2>/dev/null; true"
    );
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
}

/// The last 40 lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind an ephemeral port on 127.0.0.1")
}

/// Runs a short command to completion, panicking with its output when it fails.
pub fn run(what: &str, cmd: &mut Command) -> String {
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {:?}: {e}", cmd.get_program()));
    assert!(
        output.status.success(),
        "{what} failed ({}): {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        cmd,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh temporary directory kept for the life of the test binary (logs stay readable).
pub fn temp_dir(prefix: &str) -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix(&format!("larder-{prefix}-"))
        .tempdir()
        .expect("create a temporary directory");
    dir.keep()
}

/// A name unique within this test run, safe for databases, buckets and namespaces.
pub fn unique_name(test: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let clean: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(30)
        .collect();
    format!(
        "{}-{}-{}",
        clean.trim_matches('-'),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
