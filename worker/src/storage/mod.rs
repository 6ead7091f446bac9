//! The object store behind the cache: S3 (presigned uploads) or a local directory.
//!
//! [`Storage`] is what the upload API, the read proxy, GC and fsck hold; it dispatches
//! to [`S3Store`] or [`DirStore`]. Keys are relative (`nar/….nar.zst`); an S3 key prefix
//! is applied inside the S3 backend. Reads stream; nothing holds a whole object.

mod conditions;
pub mod dir;
mod dir_leftovers;
mod dir_meta;
mod dir_multipart;
mod dir_secret;
pub mod dir_upload;
mod error;
mod key;
pub mod presign;
mod range;
pub mod s3;
mod s3_body;
mod s3_config;
mod s3_error;
mod s3_get;
mod s3_head;
mod s3_http;
mod s3_multipart;
mod s3_presign;
mod s3_stale;
mod types;

use std::time::Duration;

use futures::stream::BoxStream;

pub use conditions::not_modified;
pub use dir::DirStore;
pub use dir_upload::upload_router;
pub use error::{Result, StorageError};
pub use key::{normalize_prefix, validate_key};
pub use range::{ByteRange, ContentRange, RangeError};
pub use s3::S3Store;
pub use s3_config::S3Config;
pub use types::*;

/// An object store: one of the two backends.
#[derive(Debug, Clone)]
pub enum Storage {
    /// An S3 bucket (AWS, Garage, R2, MinIO, …).
    S3(S3Store),
    /// A local directory, served and uploaded to through the worker itself.
    Dir(DirStore),
}

macro_rules! dispatch {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            Storage::S3($store) => $call,
            Storage::Dir($store) => $call,
        }
    };
}

impl Storage {
    /// Stores an object, replacing any object of that key; returns its ETag when known.
    pub async fn put(
        &self,
        key: &str,
        body: PutBody,
        options: &PutOptions,
    ) -> Result<Option<String>> {
        dispatch!(self, s => s.put(key, body, options).await)
    }

    /// Reads an object, or one range of it, as a stream.
    ///
    /// Errors: `NotFound`, `NotModified` (a condition matched), `InvalidRange`.
    pub async fn get(
        &self,
        key: &str,
        range: Option<ByteRange>,
        conditions: &Conditions,
    ) -> Result<GetObject> {
        dispatch!(self, s => s.get(key, range, conditions).await)
    }

    /// An object's metadata, or `None` when it does not exist.
    pub async fn head(&self, key: &str) -> Result<Option<ObjectMeta>> {
        dispatch!(self, s => s.head(key).await)
    }

    /// Deletes keys (absent ones count as deleted) in batches of at most 1000 and
    /// returns the keys that could not be deleted.
    pub async fn delete_many(&self, keys: &[String]) -> Result<Vec<DeleteFailure>> {
        dispatch!(self, s => s.delete_many(keys).await)
    }

    /// Every object whose key starts with `prefix` (`""` for all), with its size.
    pub fn list(&self, prefix: &str) -> BoxStream<'static, Result<ListedObject>> {
        dispatch!(self, s => s.list(prefix))
    }

    /// A URL (and headers) through which anyone may PUT `key` until `expires` has passed.
    pub async fn presign_put(
        &self,
        key: &str,
        expires: Duration,
        options: &PutPresign,
    ) -> Result<PresignedRequest> {
        dispatch!(self, s => s.presign_put(key, expires, options).await)
    }

    /// Starts a multipart upload of `key`; returns its upload id.
    pub async fn create_multipart(&self, key: &str) -> Result<String> {
        dispatch!(self, s => s.create_multipart(key).await)
    }

    /// A URL through which anyone may PUT part `part_number` (1..=10000) of an upload.
    pub async fn presign_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        expires: Duration,
    ) -> Result<String> {
        dispatch!(self, s => s.presign_part(key, upload_id, part_number, expires).await)
    }

    /// Joins the parts, in the order given (ascending part numbers), into the object.
    ///
    /// Errors: `NotFound` when the upload is unknown; `InvalidInput` for a missing
    /// part, a wrong ETag or parts out of order.
    pub async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> Result<Option<String>> {
        dispatch!(self, s => s.complete_multipart(key, upload_id, parts).await)
    }

    /// Abandons a multipart upload and drops its parts; an unknown upload is not an error.
    pub async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<()> {
        dispatch!(self, s => s.abort_multipart(key, upload_id).await)
    }

    /// Aborts every multipart upload `(key, upload id)`, `concurrency` at a time, going
    /// on past failures (each is logged). Returns those that could not be aborted: they
    /// cost storage until the bucket's lifecycle rule removes them, nothing else.
    pub async fn abort_all(
        &self,
        uploads: &[(String, String)],
        concurrency: usize,
    ) -> Vec<(String, StorageError)> {
        use futures::StreamExt;
        // Collected first: a lazy map over borrowed items makes the future not `Send`
        // for every lifetime, which axum handlers and `tokio::spawn` need.
        let aborts: Vec<_> = uploads
            .iter()
            .map(|(key, upload_id)| {
                let (key, upload_id) = (key.clone(), upload_id.clone());
                async move {
                    let result = self.abort_multipart(&key, &upload_id).await;
                    if let Err(e) = &result {
                        tracing::warn!(key, upload_id, "cannot abort a multipart upload: {e}");
                    }
                    result.err().map(|e| (key, e))
                }
            })
            .collect();
        let results: Vec<Option<(String, StorageError)>> = futures::stream::iter(aborts)
            .buffer_unordered(concurrency.max(1))
            .collect()
            .await;
        results.into_iter().flatten().collect()
    }

    /// Removes what killed uploads left behind before `cutoff`: temporary files and
    /// multipart folders of the local directory, NAR multipart uploads on S3 (aborted);
    /// returns how many went.
    pub async fn remove_stale_uploads(&self, cutoff: std::time::SystemTime) -> Result<u64> {
        dispatch!(self, s => s.remove_stale_uploads(cutoff).await)
    }

    /// A URL through which anyone may GET `key` until `expires` has passed, when the
    /// backend has such URLs (S3); `None` for the local directory (serve it instead).
    pub async fn presign_get(&self, key: &str, expires: Duration) -> Result<Option<String>> {
        dispatch!(self, s => s.presign_get(key, expires).await)
    }
}

/// Checks a part number against S3's range, 1..=10000.
pub(crate) fn check_part_number(op: &'static str, key: &str, part_number: u32) -> Result<()> {
    if (1..=MAX_PART_NUMBER).contains(&part_number) {
        Ok(())
    } else {
        Err(StorageError::invalid(
            op,
            key,
            format!("part number {part_number} outside 1..={MAX_PART_NUMBER}"),
        ))
    }
}

/// Checks a presigned URL lifetime: more than zero, at most seven days (S3's limit).
pub(crate) fn check_expiry(op: &'static str, key: &str, expires: Duration) -> Result<()> {
    if expires.is_zero() || expires > Duration::from_secs(7 * 24 * 3600) {
        return Err(StorageError::invalid(
            op,
            key,
            "expiry must be within 1s..=7 days",
        ));
    }
    Ok(())
}
