//! Multipart uploads nobody will complete or abort: one opened by a worker killed before
//! its session was saved is named by no row, so only a listing of the bucket finds it.
//! Garbage collection aborts those older than its failed-upload cutoff, the same rule the
//! directory backend applies to its leftovers (`dir_leftovers.rs`).

use std::time::SystemTime;

use futures::StreamExt;

use super::s3::S3Store;
use super::s3_error::map_sdk_error;
use super::Result;
use crate::nix::{ObjectKey, ObjectType};

/// Aborts in flight at once.
const CONCURRENCY: usize = 8;

impl S3Store {
    /// Aborts this store's NAR multipart uploads started before `cutoff`; returns how
    /// many it aborted. Only keys Larder could have opened an upload for are touched,
    /// so a bucket shared with other software keeps their uploads. A failed abort is
    /// logged and left to the bucket's lifecycle rule, and so is everything when the
    /// bucket refuses the listing.
    pub async fn remove_stale_uploads(&self, cutoff: SystemTime) -> Result<u64> {
        const OP: &str = "remove_stale_uploads";
        let listed = format!("{}nar/", self.prefix);
        let mut stale = Vec::new();
        let (mut key_marker, mut id_marker) = (None, None);
        loop {
            let answer = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&listed)
                .set_key_marker(key_marker)
                .set_upload_id_marker(id_marker)
                .send()
                .await;
            let page = match answer {
                Ok(page) => page,
                // A role without the permission must not fail the whole collection.
                Err(e) => {
                    let e = map_sdk_error(OP, &listed, e);
                    tracing::warn!(
                        "cannot list multipart uploads ({e}); grant \
                         s3:ListBucketMultipartUploads on the bucket, or rely on its \
                         lifecycle rule to abort stale ones"
                    );
                    break;
                }
            };
            for upload in page.uploads() {
                let (Some(full), Some(id), Some(initiated)) =
                    (upload.key(), upload.upload_id(), upload.initiated())
                else {
                    continue;
                };
                let Some(key) = full.strip_prefix(&self.prefix) else {
                    continue;
                };
                let started = SystemTime::try_from(*initiated).ok();
                if ObjectKey::parse_as(key, ObjectType::Nar).is_ok()
                    && started.is_some_and(|t| t < cutoff)
                {
                    stale.push((key.to_string(), id.to_string()));
                }
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if page.is_truncated() != Some(true) || key_marker.is_none() {
                break;
            }
        }
        let aborted = futures::stream::iter(stale)
            .map(|(key, id)| async move {
                match self.abort_multipart(&key, &id).await {
                    Ok(()) => 1,
                    Err(e) => {
                        tracing::warn!("cannot abort a stale upload of {key}: {e}");
                        0
                    }
                }
            })
            .buffer_unordered(CONCURRENCY)
            .fold(0u64, |n, one| async move { n + one })
            .await;
        Ok(aborted)
    }
}
