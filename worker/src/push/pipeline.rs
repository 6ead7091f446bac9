//! The push's main stage, one path at a time and `--jobs` paths at once: read, hash and
//! compress the path, declare its files' hashes to the worker (which answers with PUTs
//! bound to them), and upload at once, so compressing one path overlaps uploading others
//! and at most `--jobs` compressed NARs are held at a time.

use std::collections::BTreeMap;
use std::sync::Arc;

use indicatif::ProgressBar;

use super::objects::{DeclaredPath, FileDigest, PathObjects};
use super::prepare::{self, CompressOptions, LogSource, PreparedPath};
use super::spool::{MemoryBudget, Stored};
use super::upload::{Payload, Uploaded, Uploader};
use super::wire::{DeclareFilesRequest, FileInfo, PendingClosureResponse, PendingObject};
use super::{api::Api, PushError};

/// One object of a prepared path, ready to go up.
struct Leaf {
    what: &'static str,
    digest: FileDigest,
    payload: Payload,
}

/// What the stage shares between paths.
pub struct Pipeline<'a> {
    /// The worker.
    pub api: &'a Api,
    /// Sends bodies, `--jobs` at a time.
    pub uploader: &'a Uploader,
    /// The sessions of this push, one per root.
    pub sessions: &'a [PendingClosureResponse],
    /// Every pending object: the session it is pending in (an index into `sessions`)
    /// and how the session said to upload it.
    pub pending: &'a BTreeMap<String, (usize, PendingObject)>,
    /// Whether the server takes file declarations (else the session's URLs are used).
    pub declare_files: bool,
    /// Memory for compressed NARs before they spill to temporary files.
    pub budget: Arc<MemoryBudget>,
    /// zstd settings.
    pub compress: CompressOptions,
    /// Bytes read from the store.
    pub prepare_bar: ProgressBar,
    /// Bytes sent; its length grows as paths are compressed.
    pub upload_bar: ProgressBar,
}

impl Pipeline<'_> {
    /// Prepares `path` and uploads its pending `leaves` (NAR, listing, log). Returns what
    /// signing its narinfo needs and how many objects went up.
    pub async fn path(
        &self,
        path: &DeclaredPath,
        log: Option<LogSource>,
        leaves: &[String],
    ) -> Result<(PathObjects, usize), PushError> {
        let prepared = prepare::prepare_path(
            path.info.clone(),
            log,
            self.budget.clone(),
            self.compress,
            self.prepare_bar.clone(),
        )
        .await?;
        let (objects, mut ready) = split(prepared);
        let shown = path.info.path.to_string();
        let mut declarations: BTreeMap<usize, DeclareFilesRequest> = BTreeMap::new();
        for key in leaves {
            let leaf = ready.get(key).ok_or_else(|| PushError::Prepare {
                path: shown.clone(),
                step: "prepare",
                message: format!("{key} was declared but could not be made"),
            })?;
            let owner = self.owner(key)?.0;
            if self.declare_files {
                declarations.entry(owner).or_default().files.insert(
                    key.clone(),
                    FileInfo {
                        file_hash: leaf.digest.hash.to_string(),
                        file_size: leaf.digest.size,
                    },
                );
            }
        }
        let mut checksummed = BTreeMap::new();
        for (owner, request) in &declarations {
            let answer = self
                .api
                .declare_files(&self.sessions[*owner].id, request)
                .await?;
            checksummed.extend(answer.pending_objects);
        }
        let mut uploads = Vec::with_capacity(leaves.len());
        for key in leaves {
            let Some(leaf) = ready.remove(key) else {
                continue;
            };
            // Single PUTs use the URL bound to the declared hash; multipart uploads go on
            // with the parts the session handed out.
            let object = match checksummed.remove(key) {
                Some(object) => object,
                None => self.owner(key)?.1.clone(),
            };
            self.upload_bar.inc_length(leaf.payload.data.len());
            uploads.push(async move {
                self.uploader
                    .upload(key, leaf.what, &object, &leaf.payload)
                    .await
            });
        }
        let results = futures::future::try_join_all(uploads).await?;
        let sent = results
            .iter()
            .filter(|r| matches!(r, Uploaded::Sent(_)))
            .count();
        Ok((objects, sent))
    }

    fn owner(&self, key: &str) -> Result<&(usize, PendingObject), PushError> {
        self.pending.get(key).ok_or_else(|| PushError::Http {
            step: format!("upload {key}"),
            status: None,
            message: "the worker did not ask for this object".into(),
        })
    }
}

/// Splits a prepared path into its description and its objects' bytes by key.
fn split(prepared: PreparedPath) -> (PathObjects, BTreeMap<String, Leaf>) {
    let PreparedPath {
        objects,
        nar,
        listing,
        log,
    } = prepared;
    let mut leaves = BTreeMap::new();
    leaves.insert(
        objects.nar_key().into_string(),
        Leaf {
            what: "NAR",
            digest: objects.nar,
            payload: Payload {
                data: nar,
                headers: vec![("content-type", "application/x-nix-nar")],
            },
        },
    );
    leaves.insert(
        objects.listing_key().into_string(),
        Leaf {
            what: "listing",
            digest: objects.listing,
            payload: Payload {
                data: Stored::bytes(listing),
                headers: vec![
                    ("content-type", "application/json"),
                    ("content-encoding", "zstd"),
                ],
            },
        },
    );
    if let (Some(bytes), Some((key, digest))) = (log, &objects.log) {
        leaves.insert(
            key.as_str().to_string(),
            Leaf {
                what: "build log",
                digest: *digest,
                payload: Payload {
                    data: Stored::bytes(bytes),
                    headers: vec![
                        ("content-type", "text/plain; charset=utf-8"),
                        ("content-encoding", "zstd"),
                    ],
                },
            },
        );
    }
    (objects, leaves)
}
