//! Local-directory helpers: atomic writes through temporary files, and the small
//! sidecar file that keeps an object's HTTP headers.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use super::{ByteStream, PutOptions, Result, StorageError};

/// Headers stored beside an object, in `.{name}.meta`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Sidecar {
    /// Size of the object these headers were written with; a sidecar whose size
    /// disagrees with the object belongs to another write and is ignored.
    pub size: u64,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub cache_control: Option<String>,
}

impl Sidecar {
    /// The sidecar for `options`, or `None` when there is nothing to keep.
    pub fn from_options(size: u64, options: &PutOptions) -> Option<Sidecar> {
        let sidecar = Sidecar {
            size,
            content_type: options.content_type.clone(),
            content_encoding: options.content_encoding.clone(),
            cache_control: options.cache_control.clone(),
        };
        let empty = sidecar.content_type.is_none()
            && sidecar.content_encoding.is_none()
            && sidecar.cache_control.is_none();
        (!empty).then_some(sidecar)
    }
}

/// Path of the sidecar of the object at `path`.
pub(crate) fn sidecar_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.meta"))
}

/// Reads the sidecar of the object at `path`, if it has one matching `size`.
pub(crate) async fn read_sidecar(path: &Path, size: u64) -> Option<Sidecar> {
    let bytes = tokio::fs::read(sidecar_path(path)).await.ok()?;
    let sidecar: Sidecar = serde_json::from_slice(&bytes).ok()?;
    (sidecar.size == size).then_some(sidecar)
}

/// The ETag of a local file: its size and modification time, quoted hex.
pub(crate) fn etag_of(meta: &std::fs::Metadata) -> String {
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("\"{:x}-{:x}\"", meta.len(), mtime)
}

/// A file being written under a hidden name, removed unless persisted.
pub(crate) struct TempFile {
    path: Option<PathBuf>,
}

impl TempFile {
    /// Renames the (already synced) file to `target` and syncs the directory, so the
    /// object appears whole or not at all, and survives a crash once this returns.
    pub async fn persist(mut self, target: &Path) -> std::io::Result<()> {
        let Some(path) = self.path.take() else {
            return Ok(());
        };
        if let Err(e) = tokio::fs::rename(&path, target).await {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        sync_dir(target).await
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.path.take() {
            // Best effort: a leftover hidden temp file is invisible, and the collector
            // removes it once it is old (dir_leftovers.rs), as it does those of
            // processes killed before any destructor could run.
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Syncs the directory holding `path`, making a rename in it durable.
pub(crate) async fn sync_dir(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => tokio::fs::File::open(dir).await?.sync_all().await,
        None => Ok(()),
    }
}

/// What was written to a temporary file.
pub(crate) struct Written {
    pub file: TempFile,
    pub size: u64,
    pub sha256: [u8; 32],
}

/// How the names of temporary files start.
pub(crate) const TEMP_PREFIX: &str = ".tmp-";

/// A fresh random name for a hidden temporary file.
pub(crate) fn temp_name() -> String {
    format!("{TEMP_PREFIX}{}", random_hex(12))
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // Without system randomness names could collide; fall back to time and pid.
    if getrandom::fill(&mut bytes).is_err() {
        let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
        bytes = Sha256::digest(seed.as_bytes())[..n.min(32)].to_vec();
    }
    hex::encode(bytes)
}

/// Streams `body` into a new temporary file in `dir`, hashing as it goes, and syncs it.
///
/// Refuses (and removes the file) when the length differs from `expected_len` or the
/// SHA-256 from `expected_sha256`.
pub(crate) async fn write_temp(
    op: &'static str,
    key: &str,
    dir: &Path,
    mut body: ByteStream,
    expected_len: Option<u64>,
    expected_sha256: Option<[u8; 32]>,
) -> Result<Written> {
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| StorageError::other(op, key, e))?;
    let path = dir.join(temp_name());
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .await
        .map_err(|e| StorageError::other(op, key, e))?;
    let file = TempFile { path: Some(path) };
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        size += chunk.len() as u64;
        if expected_len.is_some_and(|len| size > len) {
            return Err(StorageError::invalid(op, key, "body longer than declared"));
        }
        hasher.update(&chunk);
        out.write_all(&chunk)
            .await
            .map_err(|e| StorageError::other(op, key, e))?;
    }
    if expected_len.is_some_and(|len| size != len) {
        return Err(StorageError::invalid(op, key, "body shorter than declared"));
    }
    let sha256: [u8; 32] = hasher.finalize().into();
    if expected_sha256.is_some_and(|want| want != sha256) {
        return Err(StorageError::ChecksumMismatch {
            op,
            key: key.to_string(),
        });
    }
    out.sync_all()
        .await
        .map_err(|e| StorageError::other(op, key, e))?;
    Ok(Written { file, size, sha256 })
}

/// Writes `sidecar` (or removes a stale one) beside the object at `path`, atomically.
pub(crate) async fn write_sidecar(
    op: &'static str,
    key: &str,
    path: &Path,
    sidecar: Option<&Sidecar>,
) -> Result<()> {
    let target = sidecar_path(path);
    let Some(sidecar) = sidecar else {
        return match tokio::fs::remove_file(&target).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StorageError::other(op, key, e))
            }
            _ => Ok(()),
        };
    };
    let json = serde_json::to_vec(sidecar).map_err(|e| StorageError::other(op, key, e))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let body: ByteStream = Box::pin(futures::stream::once(async move { Ok(json.into()) }));
    let written = write_temp(op, key, dir, body, None, None).await?;
    written
        .file
        .persist(&target)
        .await
        .map_err(|e| StorageError::other(op, key, e))
}
