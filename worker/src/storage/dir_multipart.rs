//! Multipart uploads on the local directory: parts under `.multipart/{upload id}/`,
//! completed by concatenation in part order, aborted by deletion.
//!
//! A part is stored as `{part:05}-{sha256 hex}` and its ETag is the quoted SHA-256, so
//! re-uploading a part keeps both versions and completion takes the one the client names,
//! as S3 does.

use std::path::PathBuf;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use tokio_util::io::ReaderStream;

use super::dir::DirStore;
use super::dir_meta::{random_hex, sidecar_path, write_temp};
use super::error::io_error;
use super::key::validate_key;
use super::presign::UploadParams;
use super::{check_part_number, ByteStream, CompletedPart, Result, StorageError};

/// Folder of open multipart uploads, under the root.
pub(crate) const MULTIPART_DIR: &str = ".multipart";

/// File in an upload's folder naming the key it uploads.
const KEY_FILE: &str = "key";

impl DirStore {
    /// Starts an upload: a folder named by a random id, recording the key.
    pub async fn create_multipart(&self, key: &str) -> Result<String> {
        const OP: &str = "create_multipart";
        validate_key(OP, key)?;
        let id = random_hex(16);
        let dir = self.inner.root.join(MULTIPART_DIR).join(&id);
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| StorageError::other(OP, key, e))?;
        tokio::fs::write(dir.join(KEY_FILE), key)
            .await
            .map_err(|e| StorageError::other(OP, key, e))?;
        Ok(id)
    }

    /// A signed URL for one part; the upload's existence is checked when the part arrives.
    pub async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        expires: Duration,
    ) -> Result<String> {
        const OP: &str = "presign_part";
        validate_key(OP, key)?;
        check_upload_id(OP, key, upload_id)?;
        check_part_number(OP, key, part_number)?;
        let params = UploadParams {
            expires: self.expiry(OP, key, expires)?,
            upload_id: Some(upload_id.to_string()),
            part: Some(part_number),
            ..UploadParams::default()
        };
        Ok(self.signed_url(key, params))
    }

    /// Stores one part of an open upload of `key`; returns its ETag.
    pub(crate) async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        body: ByteStream,
        checksum_sha256: Option<[u8; 32]>,
    ) -> Result<String> {
        const OP: &str = "upload_part";
        check_part_number(OP, key, part_number)?;
        let dir = self.upload_dir(OP, key, upload_id).await?;
        let written = write_temp(OP, key, &dir, body, None, checksum_sha256).await?;
        let hex = hex::encode(written.sha256);
        let target = dir.join(format!("{part_number:05}-{hex}"));
        written
            .file
            .persist(&target)
            .await
            .map_err(|e| io_error(OP, key, e))?;
        Ok(format!("\"{hex}\""))
    }

    /// Concatenates the named parts into the object and removes the upload.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Option<String>> {
        const OP: &str = "complete_multipart";
        let target = self.path_of(OP, key)?;
        let dir = self.upload_dir(OP, key, upload_id).await?;
        if parts.is_empty() {
            return Err(StorageError::invalid(OP, key, "no parts"));
        }
        let mut files = Vec::with_capacity(parts.len());
        let mut previous = 0;
        for part in parts {
            check_part_number(OP, key, part.part_number)?;
            if part.part_number <= previous {
                return Err(StorageError::invalid(
                    OP,
                    key,
                    "parts not in ascending order",
                ));
            }
            previous = part.part_number;
            let hex = part.etag.trim().trim_matches('"').to_ascii_lowercase();
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(StorageError::invalid(
                    OP,
                    key,
                    format!("bad ETag {:?}", part.etag),
                ));
            }
            let file = dir.join(format!("{:05}-{hex}", part.part_number));
            if !tokio::fs::try_exists(&file).await.unwrap_or(false) {
                return Err(StorageError::invalid(
                    OP,
                    key,
                    format!(
                        "part {} with ETag {} was not uploaded",
                        part.part_number, part.etag
                    ),
                ));
            }
            files.push(file);
        }
        let etag = self.concatenate(OP, key, &target, &files).await?;
        // The object is in place; a leftover upload folder would only waste space.
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(Some(etag))
    }

    async fn concatenate(
        &self,
        op: &'static str,
        key: &str,
        target: &std::path::Path,
        files: &[PathBuf],
    ) -> Result<String> {
        let parent = target.parent().unwrap_or(&self.inner.root).to_path_buf();
        let owned_key = key.to_string();
        let body: ByteStream = Box::pin(
            futures::stream::iter(files.to_vec())
                .then(move |file| {
                    let key = owned_key.clone();
                    async move {
                        match tokio::fs::File::open(&file).await {
                            Ok(f) => ReaderStream::with_capacity(f, 64 * 1024)
                                .map_err(move |e| StorageError::other(op, &key, e))
                                .boxed(),
                            Err(e) => {
                                futures::stream::once(async move { Err(io_error(op, &key, e)) })
                                    .boxed()
                            }
                        }
                    }
                })
                .flatten(),
        );
        let temp = write_temp(op, key, &parent, body, None, None).await?.file;
        // Multipart objects carry no stored headers; drop any left from an earlier put.
        let _ = tokio::fs::remove_file(sidecar_path(target)).await;
        temp.persist(target)
            .await
            .map_err(|e| StorageError::other(op, key, e))?;
        let meta = tokio::fs::metadata(target)
            .await
            .map_err(|e| StorageError::other(op, key, e))?;
        Ok(super::dir_meta::etag_of(&meta))
    }

    /// Drops an upload and its parts; unknown uploads are fine.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        const OP: &str = "abort_multipart";
        match self.upload_dir(OP, key, upload_id).await {
            Ok(dir) => match tokio::fs::remove_dir_all(&dir).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(StorageError::other(OP, key, e))
                }
                _ => Ok(()),
            },
            Err(StorageError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The folder of upload `upload_id`, checking that it exists and uploads `key`.
    async fn upload_dir(&self, op: &'static str, key: &str, upload_id: &str) -> Result<PathBuf> {
        validate_key(op, key)?;
        check_upload_id(op, key, upload_id)?;
        let dir = self.inner.root.join(MULTIPART_DIR).join(upload_id);
        let recorded = tokio::fs::read_to_string(dir.join(KEY_FILE))
            .await
            .map_err(|e| io_error(op, upload_id, e))?;
        if recorded != key {
            return Err(StorageError::not_found(op, upload_id));
        }
        Ok(dir)
    }
}

/// Upload ids are 32 lower-case hex digits; anything else could name another path.
fn check_upload_id(op: &'static str, key: &str, upload_id: &str) -> Result<()> {
    if upload_id.len() == 32
        && upload_id
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    {
        Ok(())
    } else {
        Err(StorageError::not_found(op, key))
    }
}
