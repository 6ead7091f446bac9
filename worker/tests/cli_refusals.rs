//! The `larder` binary refusing bad input as a newcomer meets it: one line on stderr
//! saying what is wrong and what to do, a non-zero exit, no panic, and nothing created.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};

/// `larder ARGS` with no LARDER_* settings inherited, and Nix configured as the tests'.
fn larder(args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_larder"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARDER_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .env("NIX_CONF_DIR", Nix::shared().conf_dir())
        .env("NIX_REMOTE", "local")
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run larder")
}

/// Asserts `out` is a refusal whose only stderr line (besides warnings) holds `want`;
/// returns that line.
fn refused(out: &Output, want: &str) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "succeeded; stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.contains("WARN")).collect();
    assert_eq!(lines.len(), 1, "one line expected:\n{stderr}");
    assert!(lines[0].starts_with("larder: "), "{stderr}");
    assert!(lines[0].contains(want), "{want:?} missing from:\n{stderr}");
    lines[0].to_string()
}

/// Asserts `out` is clap's refusal of a flag's value (exit 2) with `want` in it.
fn bad_value(out: &Output, want: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr:\n{stderr}");
    assert!(stderr.starts_with("error: invalid value"), "{stderr}");
    assert!(stderr.contains(want), "{want:?} missing from:\n{stderr}");
}

fn scratch() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn private_file(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path.to_path_buf()
}

#[test]
fn serve_refuses_before_creating_anything() {
    let dir = scratch();
    let data = dir.path().join("data");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = larder(&["serve", "--listen", &addr, "--data-dir", s(&data)]);
    refused(&out, "another process listens there");
    assert!(!data.exists(), "a refused start created {}", data.display());

    let free = larder_e2e::process::free_port().to_string();
    let listen = format!("127.0.0.1:{free}");
    let tokens = private_file(&dir.path().join("tokens"), "short push\n");
    let out = larder(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        s(&data),
        "--token-file",
        s(&tokens),
    ]);
    refused(&out, "token shorter than 16 characters");
    let key = private_file(&dir.path().join("key"), "\n");
    let out = larder(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        s(&data),
        "--signing-key-file",
        s(&key),
    ]);
    refused(
        &out,
        "the signing key file is empty; `larder keygen NAME > FILE`",
    );
    let out = larder(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        s(&data),
        "--signing-key-file",
        s(&dir.path().join("missing")),
    ]);
    refused(&out, "missing: cannot read the signing key: ");
    assert!(!data.exists(), "a refused start created {}", data.display());

    // A database named by --database is not created unless asked to migrate.
    let db = dir.path().join("larder.db");
    let url = format!("sqlite://{}", db.display());
    let out = larder(&[
        "serve",
        "--listen",
        &listen,
        "--data-dir",
        s(&data),
        "--database",
        &url,
    ]);
    refused(&out, "is --database right?");
    assert!(!db.exists(), "a refused start created {}", db.display());

    // A data dir that cannot be made is named as the data dir.
    let file = private_file(&dir.path().join("file"), "");
    let inside = file.join("data");
    let out = larder(&["serve", "--listen", &listen, "--data-dir", s(&inside)]);
    refused(&out, "cannot create the data dir");
    // sysfs refuses new files even to root, so this holds whoever runs the test.
    let out = larder(&["serve", "--listen", &listen, "--data-dir", "/sys/kernel"]);
    refused(&out, "cannot write into the data dir /sys/kernel");

    bad_value(
        &larder(&["serve", "--listen", "example.org:80"]),
        "0.0.0.0:5050",
    );
    bad_value(
        &larder(&["serve", "--public-url", "cache"]),
        "e.g. https://",
    );
    bad_value(
        &larder(&["serve", "--narinfo-cache-ttl", "forever"]),
        "e.g. 90s",
    );
    bad_value(&larder(&["serve", "--narinfo-cache-size", "lots"]), "32MiB");
}

#[test]
fn commands_on_a_cache_refuse_a_data_dir_without_one() {
    let dir = scratch();
    let data = dir.path().join("typo");
    for args in [
        vec!["gc", "--older-than", "30d"],
        vec!["fsck"],
        vec!["index", "build", "--public-url", "http://127.0.0.1:5050"],
    ] {
        let mut args = args;
        args.extend(["--data-dir", s(&data)]);
        let line = refused(&larder(&args), "no cache in");
        assert!(line.contains("is --data-dir right?"), "{line}");
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
    bad_value(
        &larder(&["gc", "--older-than", "30"]),
        "e.g. 90s, 15m, 6h or 30d",
    );
    let token = private_file(&dir.path().join("read-token"), "");
    let out = larder(&[
        "index",
        "query",
        "--cache",
        "http://127.0.0.1:1",
        "--token-file",
        s(&token),
        "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi",
    ]);
    refused(&out, "read-token: the token file is empty");
    bad_value(
        &larder(&[
            "index",
            "build",
            "--public-url",
            "cache",
            "--bloom-rate",
            "0.5",
        ]),
        "not a URL",
    );
    bad_value(
        &larder(&[
            "index",
            "build",
            "--public-url",
            "http://x",
            "--bloom-rate",
            "1",
        ]),
        "strictly between 0 and 1",
    );
}

/// `migrate` of a named database leaves the data dir alone: it holds only the embedded
/// database, and a migration Job must not grow a `larder-data/` wherever it runs.
#[test]
fn migrate_of_a_named_database_creates_no_data_dir() {
    let dir = scratch();
    let data = dir.path().join("data");
    let db = dir.path().join("cache.db");
    let out = larder(&[
        "migrate",
        "--data-dir",
        s(&data),
        "--database",
        &format!("sqlite://{}", db.display()),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(db.is_file(), "the database was not created");
    assert!(!data.exists(), "migrate created {}", data.display());
    // Its help offers only the flags it reads.
    let help = larder(&["migrate", "--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(help.contains("--database"), "{help}");
    assert!(
        !help.contains("--storage") && !help.contains("--s3-"),
        "{help}"
    );
}

#[test]
fn keygen_says_what_is_wrong_with_a_name() {
    for (name, want) in [
        ("", "is empty"),
        ("a b", "has whitespace"),
        ("cache:1", "has a ':'"),
    ] {
        let out = larder(&["keygen", name]);
        refused(&out, want);
        assert!(out.stdout.is_empty(), "{name:?} printed a key");
    }
    let out = larder(&["keygen", "cache.example.org-1"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("cache.example.org-1:"));
}

#[test]
fn push_checks_its_own_arguments_before_the_server() {
    let dir = scratch();
    let token = private_file(&dir.path().join("token"), "\n");
    // Nothing listens on port 1: reaching the server would fail differently.
    let server = "http://127.0.0.1:1";
    let out = larder(&[
        "push",
        "--server",
        server,
        "--token-file",
        s(&token),
        "/nix/store",
    ]);
    refused(&out, "the token file is empty");
    let missing = dir.path().join("result");
    let out = larder(&["push", "--server", server, "--token", "t", s(&missing)]);
    refused(&out, "result: no such file or store path");
    let out = larder(&["push", "--server", server, "--token", "t", "/nix/store"]);
    refused(&out, "is the store itself");
    bad_value(
        &larder(&["push", "--server", "cache.example.org", "p"]),
        "e.g. https://cache.example.org",
    );
}

#[test]
fn push_says_why_the_server_refused_or_did_not_answer() {
    let paths = Nix::shared().build_closure("cli-refusals", &[PathSpec::new("leaf", 100, &[])]);
    let path = paths[0].as_str();
    let out = larder(&[
        "push",
        "--server",
        "http://127.0.0.1:1",
        "--attempts",
        "1",
        "--token",
        "t",
        path,
    ]);
    // The cause comes whole, with what to check.
    let line = refused(&out, "Connection refused");
    assert!(line.contains("is it running?"), "{line}");

    let worker = Worker::start("cli-refusals", Backend::Embedded, &[]);
    let out = larder(&["push", "--server", &worker.url, path]);
    refused(&out, "no push token was given: pass --token-file FILE");
    let out = larder(&[
        "push",
        "--server",
        &worker.url,
        "--token",
        "not-the-token-of-this-worker",
        path,
    ]);
    refused(&out, "the server does not know this push token");
    let out = larder(&[
        "push",
        "--server",
        &worker.url,
        "--token",
        &worker.token,
        "--nix",
        "/nonexistent/nix",
        path,
    ]);
    refused(&out, "is Nix installed");

    // A token file everyone may read still works, with a warning saying how to fix it.
    let dir = scratch();
    let shared = dir.path().join("token");
    std::fs::write(&shared, format!("{}\n", worker.token)).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = larder(&[
        "push",
        "--quiet",
        "--server",
        &worker.url,
        "--token-file",
        s(&shared),
        path,
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}\n{}", worker.log());
    assert!(
        stderr.contains("readable or writable by every user (mode 0644)")
            && stderr.contains(&format!("chmod 600 {}", shared.display())),
        "{stderr}"
    );
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in a log: {stderr:?}"
    );
}

/// A path on disk that Nix has not registered is refused at once: `push` reads the local
/// store only, and never asks the user's substituters about it (they may be slow or far).
#[test]
fn push_of_an_unregistered_path_never_asks_the_substituters() {
    let substituter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = substituter.local_addr().unwrap().port();
    substituter.set_nonblocking(true).unwrap();
    let hash: String = (0..32)
        .map(|i| b"0123456789abcdfghijklmnpqrsvwxyz"[(i * 7 + port as usize) % 32] as char)
        .collect();
    let path = PathBuf::from(format!("/nix/store/{hash}-larder-unregistered"));
    std::fs::create_dir_all(&path).unwrap();
    let worker = Worker::start("cli-unregistered", Backend::Embedded, &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_larder"))
        .args(["push", "--server", &worker.url, "--token", &worker.token])
        .arg(&path)
        .env("NIX_CONF_DIR", Nix::shared().conf_dir())
        .env("NIX_REMOTE", "local")
        .env(
            "NIX_CONFIG",
            format!("substituters = http://127.0.0.1:{port}\nconnect-timeout = 1\nstalled-download-timeout = 1\nnarinfo-cache-negative-ttl = 0"),
        )
        .output()
        .expect("run larder");
    std::fs::remove_dir(&path).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "pushed an unregistered path:\n{stderr}"
    );
    assert!(stderr.contains("path-info"), "{stderr}");
    assert!(
        substituter.accept().is_err(),
        "nix asked the substituter about a path push should read locally:\n{stderr}"
    );
}
