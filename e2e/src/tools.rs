//! Locating the third-party binaries the harness runs.

use std::path::PathBuf;

/// Path of a binary named by environment variable `var`, or a panic saying how to get it.
///
/// `fallback` is a command looked up on `PATH` when the variable is unset (for tools
/// that come from Debian packages, such as `nix-store` or `initdb`).
pub fn binary(var: &str, fallback: Option<&str>, install_hint: &str) -> PathBuf {
    if let Some(path) = std::env::var_os(var) {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "{var}={} does not exist; {install_hint}",
            path.display()
        );
        return path;
    }
    if let Some(name) = fallback {
        if let Some(found) = which(name) {
            return found;
        }
    }
    panic!("{var} is not set and no fallback was found on PATH; {install_hint}")
}

/// First executable called `name` on `PATH`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// True when this process runs as root (read from /proc, no libc needed).
pub fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("Uid:"))
                .map(|line| line.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// A binary of this workspace: `$var` when set, else `<target dir>/<profile>/<name>`
/// (`CARGO_TARGET_DIR`, or the workspace's `target/`). Panics with `build` (the command
/// that makes it) when it is missing.
pub fn workspace_bin(var: &str, profile: &str, name: &str, build: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(var) {
        return PathBuf::from(bin);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join(profile).join(name);
    assert!(
        bin.is_file(),
        "{} is missing: run `{build}` first (e2e/run-tests.sh builds what the tests use)",
        bin.display()
    );
    bin
}
