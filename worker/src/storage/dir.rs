//! The local-directory backend (`larder serve`'s default): one file per key under a root.
//!
//! Layout under the root: objects at their key's path; `.{name}.meta` sidecars with
//! stored headers; `.tmp-*` files being written; `.multipart/{upload id}/` for parts;
//! `.upload-secret`, the HMAC key of upload URLs. Keys never have a component starting
//! with `.`, so none of these can be read, written or listed as an object.

use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::stream::{self, BoxStream, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use super::dir_meta::{etag_of, read_sidecar, sidecar_path, write_sidecar, write_temp, Sidecar};
use super::dir_secret::load_or_create_secret;
use super::error::io_error;
use super::key::{validate_key, validate_prefix};
use super::presign::{upload_url, UploadParams, UrlSigner};
use super::{
    check_expiry, conditions, ByteRange, ByteStream, Conditions, DeleteFailure, GetObject,
    ListedObject, ObjectMeta, PresignedRequest, PutBody, PutOptions, PutPresign, Result,
    StorageError,
};

/// Name of the file holding the upload URL secret, under the root.
const SECRET_FILE: &str = ".upload-secret";

/// Read buffer for streaming files out.
const READ_CHUNK: usize = 64 * 1024;

/// Objects as files under a local directory.
#[derive(Clone)]
pub struct DirStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub public_url: String,
    pub signer: UrlSigner,
}

impl std::fmt::Debug for DirStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirStore")
            .field("root", &self.inner.root)
            .field("public_url", &self.inner.public_url)
            .finish_non_exhaustive()
    }
}

impl DirStore {
    /// Opens (creating) the store at `root`; upload URLs will start with `public_url`
    /// (the worker's external base URL). The signing secret is created on first use
    /// and kept in the root, so URLs stay valid across restarts and replicas sharing it.
    pub async fn open(root: impl Into<PathBuf>, public_url: impl Into<String>) -> Result<DirStore> {
        let root: PathBuf = root.into();
        let shown = root.display().to_string();
        tokio::fs::create_dir_all(&root)
            .await
            .map_err(|e| StorageError::other("open", &shown, e))?;
        let secret = load_or_create_secret(&root.join(SECRET_FILE))
            .await
            .map_err(|e| StorageError::other("open", &shown, e))?;
        Ok(DirStore {
            inner: Arc::new(Inner {
                root,
                public_url: public_url.into().trim_end_matches('/').to_string(),
                signer: UrlSigner::new(secret),
            }),
        })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// The file of `key`, after checking the key cannot escape the root.
    pub fn path_of(&self, op: &'static str, key: &str) -> Result<PathBuf> {
        validate_key(op, key)?;
        Ok(self.inner.root.join(key))
    }

    /// Stores an object atomically: written to a temporary file beside it, synced, renamed.
    pub async fn put(
        &self,
        key: &str,
        body: PutBody,
        options: &PutOptions,
    ) -> Result<Option<String>> {
        let (stream, length): (ByteStream, _) = match body {
            PutBody::Bytes(b) => {
                let len = b.len() as u64;
                (Box::pin(stream::once(async move { Ok(b) })), Some(len))
            }
            PutBody::Stream { stream, length } => (stream, Some(length)),
        };
        self.write_object("put", key, stream, length, options)
            .await
            .map(Some)
    }

    /// Streams `body` into `key`, checking length and checksum; returns the new ETag.
    pub(crate) async fn write_object(
        &self,
        op: &'static str,
        key: &str,
        body: ByteStream,
        length: Option<u64>,
        options: &PutOptions,
    ) -> Result<String> {
        let path = self.path_of(op, key)?;
        let dir = path.parent().unwrap_or(&self.inner.root).to_path_buf();
        let written = write_temp(op, key, &dir, body, length, options.checksum_sha256).await?;
        let sidecar = Sidecar::from_options(written.size, options);
        write_sidecar(op, key, &path, sidecar.as_ref()).await?;
        written
            .file
            .persist(&path)
            .await
            .map_err(|e| StorageError::other(op, key, e))?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| StorageError::other(op, key, e))?;
        Ok(etag_of(&meta))
    }

    /// Reads an object or a range of it, streaming from the open file.
    pub async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        conditions: &Conditions,
    ) -> Result<GetObject> {
        const OP: &str = "get";
        let path = self.path_of(OP, key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| io_error(OP, key, e))?;
        // Metadata of the open file: a concurrent replace cannot mix two versions.
        let meta = file.metadata().await.map_err(|e| io_error(OP, key, e))?;
        if !meta.is_file() {
            return Err(StorageError::not_found(OP, key));
        }
        let etag = etag_of(&meta);
        let last_modified = meta.modified().ok();
        if conditions::not_modified(conditions, Some(&etag), last_modified) {
            return Err(StorageError::NotModified {
                op: OP,
                key: key.to_string(),
            });
        }
        let total = meta.len();
        let content_range = match range {
            None => None,
            Some(range) => Some(
                range
                    .resolve(total)
                    .map_err(|_| StorageError::InvalidRange {
                        op: OP,
                        key: key.to_string(),
                        size: Some(total),
                    })?,
            ),
        };
        let (first, size) = content_range.map_or((0, total), |r| (r.first, r.len()));
        if first > 0 {
            file.seek(SeekFrom::Start(first))
                .await
                .map_err(|e| StorageError::other(OP, key, e))?;
        }
        let sidecar = read_sidecar(&path, total).await.unwrap_or_default();
        let owned_key = key.to_string();
        let body = ReaderStream::with_capacity(file.take(size), READ_CHUNK)
            .map_err(move |e| StorageError::other(OP, &owned_key, e));
        Ok(GetObject {
            body: Box::pin(body),
            size,
            total_size: total,
            content_range,
            etag: Some(etag),
            last_modified,
            content_type: sidecar.content_type,
            content_encoding: sidecar.content_encoding,
            cache_control: sidecar.cache_control,
        })
    }

    /// An object's metadata, or `None` when absent.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        let path = self.path_of("head", key)?;
        let meta = match tokio::fs::metadata(&path).await {
            Ok(meta) if meta.is_file() => meta,
            Ok(_) => return Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StorageError::other("head", key, e)),
        };
        let sidecar = read_sidecar(&path, meta.len()).await.unwrap_or_default();
        Ok(Some(ObjectMeta {
            size: meta.len(),
            etag: Some(etag_of(&meta)),
            last_modified: meta.modified().ok(),
            content_type: sidecar.content_type,
            content_encoding: sidecar.content_encoding,
        }))
    }

    /// Deletes each key's file and sidecar; absent keys count as deleted.
    pub async fn delete_many(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        let mut failed = Vec::new();
        for key in keys {
            if let Err(e) = self.delete_one(key).await {
                failed.push(DeleteFailure {
                    key: key.clone(),
                    message: e.to_string(),
                });
            }
        }
        Ok(failed)
    }

    async fn delete_one(&self, key: &str) -> Result<()> {
        let path = self.path_of("delete", key)?;
        for file in [path.clone(), sidecar_path(&path)] {
            match tokio::fs::remove_file(&file).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(StorageError::other("delete", key, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Every object under `prefix`, by walking the directories that can hold such keys.
    /// Keys come sorted within each directory; the order across directories is unspecified.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ListedObject>> {
        if let Err(e) = validate_prefix("list", prefix) {
            return Box::pin(stream::once(async move { Err(e) }));
        }
        // Start at the deepest directory the prefix names in full.
        let start = prefix.rfind('/').map_or("", |i| &prefix[..i]).to_string();
        let walk = Walk {
            root: self.inner.root.clone(),
            prefix: prefix.to_string(),
            dirs: vec![start],
            ready: VecDeque::new(),
        };
        Box::pin(stream::try_unfold(walk, |mut walk| async move {
            let next = walk.next().await?;
            Ok(next.map(|item| (item, walk)))
        }))
    }

    /// An upload URL for `key` signed with the store's secret.
    pub async fn presign_put(
        &self,
        key: &str,
        expires: Duration,
        options: &PutPresign,
    ) -> Result<PresignedRequest> {
        const OP: &str = "presign_put";
        validate_key(OP, key)?;
        let params = UploadParams {
            expires: self.expiry(OP, key, expires)?,
            sha256: options.checksum_sha256.map(hex::encode),
            ..UploadParams::default()
        };
        let mut headers = Vec::new();
        if let Some(sha) = options.checksum_sha256 {
            use base64::Engine;
            let b64 = base64::engine::general_purpose::STANDARD.encode(sha);
            headers.push(("x-amz-checksum-sha256".to_string(), b64));
        }
        if let Some(ct) = &options.content_type {
            headers.push(("content-type".to_string(), ct.clone()));
        }
        if let Some(ce) = &options.content_encoding {
            headers.push(("content-encoding".to_string(), ce.clone()));
        }
        Ok(PresignedRequest {
            method: "PUT".to_string(),
            url: self.signed_url(key, params),
            headers,
        })
    }

    /// Always `None`: the worker serves local objects itself.
    pub async fn presign_get(&self, key: &str, _expires: Duration) -> Result<Option<String>> {
        validate_key("presign_get", key)?;
        Ok(None)
    }

    /// The Unix time `expires` from now.
    pub(crate) fn expiry(&self, op: &'static str, key: &str, expires: Duration) -> Result<u64> {
        check_expiry(op, key, expires)?;
        Ok(unix_now() + expires.as_secs().max(1))
    }

    /// Signs `params` for `key` and renders the URL.
    pub(crate) fn signed_url(&self, key: &str, params: UploadParams) -> String {
        let signed = self.inner.signer.sign(key, params);
        upload_url(&self.inner.public_url, key, &signed)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// State of a directory walk for `list`.
struct Walk {
    root: PathBuf,
    prefix: String,
    /// Directories still to read, relative to the root (`""` is the root).
    dirs: Vec<String>,
    ready: VecDeque<ListedObject>,
}

impl Walk {
    async fn next(&mut self) -> Result<Option<ListedObject>> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                return Ok(Some(item));
            }
            let Some(dir) = self.dirs.pop() else {
                return Ok(None);
            };
            self.read(&dir).await?;
        }
    }

    async fn read(&mut self, dir: &str) -> Result<()> {
        let mut entries = match tokio::fs::read_dir(self.root.join(dir)).await {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StorageError::other("list", dir, e)),
        };
        let mut found = Vec::new();
        let mut subdirs = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| StorageError::other("list", dir, e))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let key = if dir.is_empty() {
                name
            } else {
                format!("{dir}/{name}")
            };
            let Ok(meta) = entry.metadata().await else {
                continue; // deleted while we looked
            };
            if meta.is_dir() {
                let as_dir = format!("{key}/");
                if as_dir.starts_with(&self.prefix) || self.prefix.starts_with(&as_dir) {
                    subdirs.push(key);
                }
            } else if meta.is_file() && key.starts_with(&self.prefix) {
                found.push(ListedObject {
                    key,
                    size: meta.len(),
                });
            }
        }
        found.sort_by(|a, b| a.key.cmp(&b.key));
        subdirs.sort_by(|a, b| b.cmp(a));
        self.ready.extend(found);
        self.dirs.extend(subdirs);
        Ok(())
    }
}
