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

    /// Kills the server with SIGKILL and waits until it is gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
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
/// Its name carries the binary's process id; the first call in a binary removes the
/// directories of binaries that have ended, which nothing else would (shared services
/// live in statics, never dropped), so repeated test runs do not fill the disk.
pub fn temp_dir(prefix: &str) -> PathBuf {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(remove_dirs_of_ended_binaries);
    let dir = tempfile::Builder::new()
        .prefix(&format!("larder-{prefix}-{}-", std::process::id()))
        .tempdir()
        .expect("create a temporary directory");
    dir.keep()
}

/// The process id in the name of a directory [`temp_dir`] made
/// (`larder-<prefix>-<pid>-<random>`, the random part without dashes).
fn owner_pid(name: &str) -> Option<u32> {
    let mut parts = name.strip_prefix("larder-")?.rsplitn(3, '-');
    let random = parts.next()?;
    let pid = parts.next()?.parse().ok()?;
    let prefix = parts.next()?;
    (!random.is_empty() && !prefix.is_empty()).then_some(pid)
}

/// Removes the [`temp_dir`] directories whose test binary is no longer running.
fn remove_dirs_of_ended_binaries() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(owner_pid) else {
            continue;
        };
        let running = Path::new(&format!("/proc/{pid}")).exists();
        if pid != std::process::id() && !running && entry.path().is_dir() {
            // Best effort: a directory another user owns stays.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
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

#[cfg(test)]
mod temp_dir_tests {
    use super::*;

    #[test]
    fn the_owner_of_a_temporary_directory_is_read_from_its_name() {
        assert_eq!(owner_pid("larder-garage-4242-Ab3xYz"), Some(4242));
        assert_eq!(
            owner_pid("larder-worker-bench-read-7-2-4242-Ab3xYz"),
            Some(4242)
        );
        // Not made by `temp_dir`: kept whatever their pid-like parts say.
        assert_eq!(owner_pid("larder-bench.lock"), None);
        assert_eq!(owner_pid("larder-data"), None);
        assert_eq!(owner_pid("larder-12-Ab3xYz"), None);
        assert_eq!(owner_pid("other-garage-4242-Ab3xYz"), None);
        assert_eq!(owner_pid("larder-garage-abc-Ab3xYz"), None);
    }

    #[test]
    fn a_directory_of_an_ended_binary_goes_and_a_running_ones_stays() {
        // Process ids are below 2^22 on Linux, so this one never runs.
        let ended = std::env::temp_dir().join("larder-sweeptest-4194305-Ab3xYz");
        let running =
            std::env::temp_dir().join(format!("larder-sweeptest-{}-Ab3xYz", std::process::id()));
        for dir in [&ended, &running] {
            std::fs::create_dir_all(dir).unwrap();
        }
        remove_dirs_of_ended_binaries();
        assert!(!ended.exists());
        assert!(running.exists());
        std::fs::remove_dir_all(&running).unwrap();
    }
}
