//! One push, start to end: closure, prepare, pending closures, uploads, sign, complete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use thiserror::Error;

use super::wire::{PendingClosureResponse, PendingObject, SignRequest};
use crate::nix::{ObjectType, Signature, StorePath};

use super::objects::PathObjects;
use super::prepare::{self, CompressOptions, PreparedPath};
use super::progress::{Progress, PushSummary};
use super::retry::RetryPolicy;
use super::spool::{MemoryBudget, Stored};
use super::upload::{self, Payload, Uploaded, Uploader};
use super::{api, cached, closure};

/// Why a push failed; every message names the path or object and the step.
#[derive(Debug, Error)]
pub enum PushError {
    /// A command-line path is unusable.
    #[error("{path}: {message}")]
    Input { path: String, message: String },
    /// Bad options.
    #[error("{0}")]
    Config(String),
    /// Nix could not tell about the closure.
    #[error("{step}: {message}")]
    Nix { step: String, message: String },
    /// A path could not be read, hashed or compressed.
    #[error("{path}: {step}: {message}")]
    Prepare {
        path: String,
        step: &'static str,
        message: String,
    },
    /// A request failed for good.
    #[error("{step}: {message}")]
    Http {
        step: String,
        status: Option<u16>,
        message: String,
    },
}

/// Everything a push needs; [`PushArgs`] builds it from the command line.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Worker base URL.
    pub server: String,
    /// Bearer token with the push scope.
    pub token: Option<String>,
    /// Paths to push with their closures (`./result`, store paths).
    pub paths: Vec<PathBuf>,
    /// Paths prepared and requests sent at once.
    pub jobs: usize,
    /// zstd level.
    pub compression_level: i32,
    /// zstd worker threads per NAR.
    pub zstd_workers: u32,
    /// Multipart part size in bytes (at least 5 MiB).
    pub part_size: u64,
    /// Bytes of compressed NARs kept in memory before spooling to temporary files.
    pub memory_budget: u64,
    /// Retry policy of every request.
    pub retry: RetryPolicy,
    /// Per-request timeout (connect and whole request).
    pub timeout: Duration,
    /// Upload build logs.
    pub build_logs: bool,
    /// The `nix` program.
    pub nix: PathBuf,
    /// The `nix-store` program.
    pub nix_store: PathBuf,
    /// Draw progress bars on stderr.
    pub progress: bool,
}

impl PushOptions {
    /// Defaults for pushing `paths` to `server`.
    pub fn new(server: impl Into<String>, paths: Vec<PathBuf>) -> Self {
        Self {
            server: server.into(),
            token: None,
            paths,
            jobs: 4,
            compression_level: 3,
            zstd_workers: default_zstd_workers(),
            part_size: 10 * 1024 * 1024,
            memory_budget: 256 * 1024 * 1024,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(300),
            build_logs: true,
            nix: PathBuf::from("nix"),
            nix_store: PathBuf::from("nix-store"),
            progress: false,
        }
    }
}

/// One zstd worker per core.
pub fn default_zstd_workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get() as u32)
}

/// Pushes the closures of `options.paths` to the worker.
pub async fn push(options: PushOptions) -> Result<PushSummary, PushError> {
    push_with(options, true).await
}

/// A push that skips what the cache's index says it has when `use_index`.
async fn push_with(options: PushOptions, use_index: bool) -> Result<PushSummary, PushError> {
    let started = Instant::now();
    if options.paths.is_empty() {
        return Err(PushError::Config("no paths to push".into()));
    }
    if options.part_size < upload::MIN_PART_SIZE {
        return Err(PushError::Config(format!(
            "the part size must be at least {} bytes (S3's minimum)",
            upload::MIN_PART_SIZE
        )));
    }
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(options.timeout)
        .user_agent(concat!("larder-push/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PushError::Config(format!("cannot set up HTTP: {e}")))?;
    let api = api::Api::new(http, &options.server, options.token.clone(), options.retry)?;

    let mut roots = BTreeSet::new();
    for p in &options.paths {
        roots.insert(closure::resolve(p)?);
    }
    let roots: Vec<StorePath> = roots.into_iter().collect();
    let infos = closure::query(&options.nix, &roots).await?;
    let paths_total = infos.len();
    let progress = Progress::new(options.progress);
    let (infos, cached) = if use_index {
        cached::split(api.http(), &options.server, options.token.clone(), infos).await
    } else {
        (infos, BTreeMap::new())
    };

    let prepared = prepare_all(&options, infos, &progress).await?;
    let (paths, mut payloads) = split(prepared);

    // One pending closure per root, so each root becomes a GC root of its own.
    let mut sessions: Vec<(StorePath, PendingClosureResponse)> = Vec::new();
    for root in &roots {
        let request = cached::closure_request(root, &paths, &cached);
        sessions.push((root.clone(), api.start(&request).await?));
    }
    let pending_keys = sessions.iter().flat_map(|(_, s)| s.pending_objects.keys());
    if cached::index_was_wrong(&cached, pending_keys) {
        tracing::warn!("the cache lacks paths its index lists; pushing without the index");
        return Box::pin(push_with(options, false)).await;
    }
    // An object pending in several closures is uploaded once, with the first URL.
    let mut pending: BTreeMap<String, (usize, PendingObject)> = BTreeMap::new();
    for (i, (_, session)) in sessions.iter().enumerate() {
        for (key, object) in &session.pending_objects {
            pending.entry(key.clone()).or_insert((i, object.clone()));
        }
    }
    // Free the spools of everything the cache already holds.
    payloads.retain(|key, _| pending.contains_key(key));

    let upload_bar = progress.bytes("upload", payloads.values().map(|(_, p)| p.data.len()).sum());
    let uploader = Uploader::new(
        api.clone(),
        options.jobs,
        options.part_size,
        upload_bar.clone(),
    );
    let mut objects_uploaded = 0;
    let leaves: Vec<(&String, &PendingObject)> = pending
        .iter()
        .filter(|(_, (_, o))| o.kind != ObjectType::Narinfo)
        .map(|(k, (_, o))| (k, o))
        .collect();
    let results: Vec<Uploaded> = futures::stream::iter(leaves)
        .map(|(key, object)| {
            let payloads = &payloads;
            let uploader = &uploader;
            async move {
                let (what, payload) = payloads.get(key).ok_or_else(|| PushError::Http {
                    step: format!("upload {key}"),
                    status: None,
                    message: "the worker asked for an object this push did not declare".into(),
                })?;
                uploader.upload(key, what, object, payload).await
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    objects_uploaded += results
        .iter()
        .filter(|r| matches!(r, Uploaded::Sent(_)))
        .count();
    drop(payloads);

    // Sign each pending narinfo in the closure it is pending in, then upload them all.
    let by_key: BTreeMap<String, &PathObjects> = paths
        .values()
        .map(|p| (p.narinfo_key().into_string(), p))
        .collect();
    let mut narinfos: Vec<(String, Bytes, PendingObject)> = Vec::new();
    for (i, (_, session)) in sessions.iter().enumerate() {
        let mut request = SignRequest {
            narinfos: BTreeMap::new(),
        };
        for (key, (owner, object)) in &pending {
            if *owner == i && object.kind == ObjectType::Narinfo {
                let path = by_key.get(key).ok_or_else(|| PushError::Http {
                    step: format!("sign {key}"),
                    status: None,
                    message: "the worker asked for a narinfo this push did not declare".into(),
                })?;
                request.narinfos.insert(key.clone(), path.sign_fields());
            }
        }
        if request.narinfos.is_empty() {
            continue;
        }
        let answer = api.sign(&session.id, &request).await?;
        for key in request.narinfos.keys() {
            let sigs = answer
                .signatures
                .get(key)
                .map(|s| {
                    s.iter()
                        .map(|s| Signature::parse(s))
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()
                .map_err(|e| PushError::Http {
                    step: format!("sign {key}"),
                    status: None,
                    message: format!("the worker returned a bad signature: {e}"),
                })?
                .unwrap_or_default();
            if sigs.is_empty() {
                tracing::warn!(
                    key,
                    "the worker returned no signature; the narinfo goes up unsigned"
                );
            }
            let text = by_key[key].narinfo(&sigs).render();
            let body = prepare::compress_bytes(text.as_bytes(), options.compression_level)
                .map_err(|e| PushError::Prepare {
                    path: by_key[key].info.path.to_string(),
                    step: "compress the narinfo",
                    message: e.to_string(),
                })?;
            narinfos.push((key.clone(), body, pending[key].1.clone()));
        }
    }
    let paths_uploaded = narinfos.len();
    let results: Vec<Uploaded> = futures::stream::iter(&narinfos)
        .map(|(key, body, object)| {
            let uploader = &uploader;
            async move {
                let payload = Payload {
                    data: Stored::bytes(body.clone()),
                    headers: vec![
                        ("content-type", "text/x-nix-narinfo"),
                        ("content-encoding", "zstd"),
                    ],
                };
                uploader.upload(key, "narinfo", object, &payload).await
            }
        })
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    objects_uploaded += results
        .iter()
        .filter(|r| matches!(r, Uploaded::Sent(_)))
        .count();
    upload_bar.finish_and_clear();

    for (root, session) in &sessions {
        api.complete(&session.id, &root.to_string()).await?;
    }
    Ok(PushSummary {
        paths_total,
        paths_uploaded,
        objects_uploaded,
        bytes_uploaded: uploader.bytes_sent(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Prepares every path, `--jobs` at a time.
async fn prepare_all(
    options: &PushOptions,
    infos: Vec<closure::PathInfo>,
    progress: &Progress,
) -> Result<Vec<PreparedPath>, PushError> {
    let bar = progress.bytes("prepare", infos.iter().map(|i| i.nar_size).sum());
    let budget = MemoryBudget::new(options.memory_budget);
    let compress = CompressOptions {
        level: options.compression_level,
        workers: options.zstd_workers,
    };
    let nix_store = options.build_logs.then(|| options.nix_store.clone());
    let prepared = futures::stream::iter(infos)
        .map(|info| {
            prepare::prepare_path(
                info,
                budget.clone(),
                compress,
                nix_store.clone(),
                bar.clone(),
            )
        })
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    bar.finish_and_clear();
    Ok(prepared)
}

type Payloads = BTreeMap<String, (&'static str, Payload)>;

/// Splits prepared paths into their descriptions and the bytes of each object key.
fn split(prepared: Vec<PreparedPath>) -> (BTreeMap<StorePath, PathObjects>, Payloads) {
    let mut paths = BTreeMap::new();
    let mut payloads: Payloads = BTreeMap::new();
    for p in prepared {
        // Two paths with the same NAR share its key; the first one's bytes serve both.
        payloads
            .entry(p.objects.nar_key().into_string())
            .or_insert((
                "NAR",
                Payload {
                    data: p.nar,
                    headers: vec![("content-type", "application/x-nix-nar")],
                },
            ));
        if let Some(listing) = p.listing {
            payloads.insert(
                p.objects.listing_key().into_string(),
                (
                    "listing",
                    Payload {
                        data: Stored::bytes(listing),
                        headers: vec![
                            ("content-type", "application/json"),
                            ("content-encoding", "zstd"),
                        ],
                    },
                ),
            );
        }
        if let (Some(log), Some((key, _))) = (p.log, &p.objects.log) {
            payloads.insert(
                key.as_str().to_string(),
                (
                    "build log",
                    Payload {
                        data: Stored::bytes(log),
                        headers: vec![
                            ("content-type", "text/plain; charset=utf-8"),
                            ("content-encoding", "zstd"),
                        ],
                    },
                ),
            );
        }
        paths.insert(p.objects.info.path.clone(), p.objects);
    }
    (paths, payloads)
}
