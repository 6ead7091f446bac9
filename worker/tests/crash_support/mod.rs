//! Shared by the crash tests: seeds that can be replayed, `larder push`, `larder gc` and
//! `larder fsck` as child processes, and checks that what a cache committed is whole:
//! narinfos readable, NARs hashing to their NarHash, the real Nix substituting them, and
//! (directory backend) no object under its final key with partial bytes.
#![allow(dead_code)] // each test binary uses part of this module

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use larder_e2e::larder::{larder_bin, Backend, Worker};
use larder_e2e::nix::Nix;
use larder_worker::nix::{NarInfo, NixHash};

/// The seed in `var`, else a fresh one; printed either way so a failure can be replayed.
pub fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|_| panic!("{var}={text} is not a u64")),
        Err(_) => {
            let mut bytes = [0u8; 8];
            getrandom_fill(&mut bytes);
            u64::from_le_bytes(bytes)
        }
    };
    println!("seed {seed} (replay with {var}={seed})");
    seed
}

fn getrandom_fill(bytes: &mut [u8]) {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(bytes))
        .expect("read /dev/urandom");
}

/// A `larder` subcommand with the worker's database and storage flags.
pub fn larder(worker: &Worker, subcommand: &str) -> Command {
    let mut cmd = Command::new(larder_bin());
    cmd.arg(subcommand);
    worker.store_args(&mut cmd);
    cmd
}

/// `larder push` of `paths` to `worker`, with `attempts` per request, output captured.
pub fn push_command(worker: &Worker, paths: &[&str], attempts: u32) -> Command {
    let token_file = worker.data_dir.join("push-token-for-tests");
    if !token_file.exists() {
        std::fs::write(&token_file, &worker.token).expect("write the push token");
    }
    let nix = Nix::shared();
    let mut cmd = Command::new(larder_bin());
    cmd.arg("push")
        .args(["--server", &worker.url, "--quiet"])
        .arg("--token-file")
        .arg(&token_file)
        .args(["--attempts", &attempts.to_string()])
        // A kill leaves a request unanswered; do not wait minutes for it.
        .args(["--timeout", "20s"])
        .args(paths)
        .env("NIX_CONF_DIR", nix.conf_dir())
        .env("NIX_REMOTE", "local")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Starts a push in the background.
pub fn spawn_push(worker: &Worker, paths: &[&str], attempts: u32) -> Child {
    push_command(worker, paths, attempts)
        .spawn()
        .expect("start larder push")
}

/// Runs a push to the end: its output.
pub fn push(worker: &Worker, paths: &[&str], attempts: u32) -> Output {
    push_command(worker, paths, attempts)
        .output()
        .expect("run larder push")
}

/// `stdout` and `stderr` of a finished command, for messages.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `larder fsck --sizes --checksums --json`: the report when it found a problem.
pub fn fsck(worker: &Worker) -> Result<(), String> {
    let out = larder(worker, "fsck")
        .args(["--sizes", "--checksums", "--json"])
        .output()
        .expect("run larder fsck");
    if out.status.success() {
        Ok(())
    } else {
        Err(output_text(&out))
    }
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// `GET {url}/{path}`: status and body.
pub fn get(worker: &Worker, path: &str) -> (u16, Vec<u8>) {
    let url = format!("{}/{path}", worker.url);
    block_on(async {
        let response = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status().as_u16();
        let body = response.bytes().await.expect("read a body").to_vec();
        (status, body)
    })
}

/// The 32-character hash part of a store path.
pub fn hash_of(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

/// Checks that the cache serves `path` whole: its narinfo parses and names this path,
/// and its NAR decompresses to bytes hashing to the narinfo's NarHash.
pub fn check_served(worker: &Worker, path: &str) -> Result<(), String> {
    let (status, body) = get(worker, &format!("{}.narinfo", hash_of(path)));
    if status != 200 {
        return Err(format!("{path}: narinfo answered {status}"));
    }
    let info = NarInfo::parse_bytes(&body).map_err(|e| format!("{path}: narinfo: {e}"))?;
    if info.store_path.to_string() != path {
        return Err(format!("{path}: narinfo describes {}", info.store_path));
    }
    let (status, nar) = get(worker, &info.url);
    if status != 200 {
        return Err(format!("{path}: {} answered {status}", info.url));
    }
    let nar = zstd::stream::decode_all(&nar[..])
        .map_err(|e| format!("{path}: {} does not decompress: {e}", info.url))?;
    if NixHash::of(&nar) != info.nar_hash {
        return Err(format!("{path}: {} does not hash to its NarHash", info.url));
    }
    Ok(())
}

/// The object folder of the directory backend (`None` on S3).
pub fn objects_dir(worker: &Worker) -> Option<PathBuf> {
    matches!(worker.backend, Backend::Embedded).then(|| worker.data_dir.join("objects"))
}

/// Every object file under the directory backend's folder whose bytes are not whole: a
/// NAR that does not decompress to bytes hashing to the NarHash its key names, or a
/// narinfo that does not parse. Hidden files (temporary files, sidecars, multipart
/// parts) are not objects and are skipped.
pub fn partial_objects(dir: &Path) -> Vec<String> {
    let mut bad = Vec::new();
    for (key, path) in object_files(dir, "") {
        let bytes = std::fs::read(&path).expect("read an object file");
        let whole = if let Some(name) = key
            .strip_prefix("nar/")
            .and_then(|k| k.strip_suffix(".nar.zst"))
        {
            zstd::stream::decode_all(&bytes[..])
                .is_ok_and(|nar| NixHash::of(&nar).to_base32() == name)
        } else if key.ends_with(".narinfo") {
            let text = if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                zstd::stream::decode_all(&bytes[..]).unwrap_or_default()
            } else {
                bytes
            };
            NarInfo::parse_bytes(&text).is_ok()
        } else {
            true
        };
        if !whole {
            bad.push(key);
        }
    }
    bad
}

/// `(key, path)` of every object file under `dir`, skipping dot-named bookkeeping.
pub fn object_files(dir: &Path, prefix: &str) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{prefix}{name}");
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(object_files(&entry.path(), &format!("{key}/")));
        } else {
            found.push((key, entry.path()));
        }
    }
    found
}

/// Hidden leftovers under the directory backend's folder: temporary files and open
/// multipart upload folders (relative paths).
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    walk_hidden(dir, "", &mut found);
    found
}

fn walk_hidden(dir: &Path, prefix: &str, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let rel = format!("{prefix}{name}");
        if name.starts_with(".tmp-") {
            found.push(rel);
        } else if name == ".multipart" {
            for upload in std::fs::read_dir(entry.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                found.push(format!("{rel}/{}", upload.file_name().to_string_lossy()));
            }
        } else if entry.file_type().is_ok_and(|t| t.is_dir()) && !name.starts_with('.') {
            walk_hidden(&entry.path(), &format!("{rel}/"), found);
        }
    }
}
