//! One push, start to end: closure, prepare, pending closures, uploads, sign, complete.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use thiserror::Error;

use super::wire::{PendingClosureResponse, PendingObject, SignRequest};
use crate::nix::{ObjectKey, ObjectType, Signature, StorePath};

use super::objects::{self, DeclaredPath, PathObjects};
use super::pipeline::Pipeline;
use super::prepare::{self, CompressOptions, LogSource};
use super::progress::{Progress, PushSummary};
use super::retry::RetryPolicy;
use super::spool::{MemoryBudget, Stored};
use super::upload::{self, Payload, Uploaded, Uploader};
use super::{api, closure};

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
    // Local arguments first: a mistyped path is reported at once, not after the
    // server's retries.
    let mut roots = BTreeSet::new();
    for p in &options.paths {
        roots.insert(closure::resolve(p)?);
    }
    let roots: Vec<StorePath> = roots.into_iter().collect();
    let declare_files = api.declares_files().await?;
    if !declare_files {
        tracing::warn!(
            "the server cannot bind uploads to their hashes (not a Larder worker, or an old \
             one); uploads go unchecked by the storage"
        );
    }
    let infos = closure::query(&options.nix, &roots).await?;
    let paths_total = infos.len();
    let progress = Progress::new(options.progress);
    let (declared, mut logs) = declare_all(&options, infos).await;

    // One pending closure per root, so each root becomes a GC root of its own. Nothing
    // is read yet: the worker answers with what it lacks, and only that is read.
    let mut sessions: Vec<PendingClosureResponse> = Vec::new();
    for root in &roots {
        let request = objects::closure_request(root, &declared);
        sessions.push(api.start(&request).await?);
    }
    // An object pending in several closures is uploaded once, in the first.
    let mut pending: BTreeMap<String, (usize, PendingObject)> = BTreeMap::new();
    for (i, session) in sessions.iter().enumerate() {
        for (key, object) in &session.pending_objects {
            pending.entry(key.clone()).or_insert((i, object.clone()));
        }
    }
    let pending_keys: BTreeSet<String> = pending.keys().cloned().collect();
    let work = objects::work(&declared, &pending_keys);

    let prepare_bar = progress.bytes(
        "prepare",
        work.iter().map(|(p, _)| declared[p].info.nar_size).sum(),
    );
    let upload_bar = progress.bytes("upload", 0);
    let uploader = Uploader::new(
        api.clone(),
        options.jobs,
        options.part_size,
        upload_bar.clone(),
    );
    let pipeline = Pipeline {
        api: &api,
        uploader: &uploader,
        sessions: &sessions,
        pending: &pending,
        declare_files,
        budget: MemoryBudget::new(options.memory_budget),
        compress: CompressOptions {
            level: options.compression_level,
            workers: options.zstd_workers,
        },
        prepare_bar: prepare_bar.clone(),
        upload_bar: upload_bar.clone(),
    };
    let jobs: Vec<_> = work
        .iter()
        .map(|(path, leaves)| pipeline.path(&declared[path], logs.remove(path), leaves))
        .collect();
    let done: Vec<(PathObjects, usize)> = futures::stream::iter(jobs)
        .buffer_unordered(options.jobs.max(1))
        .try_collect()
        .await?;
    prepare_bar.finish_and_clear();
    let mut objects_uploaded: usize = done.iter().map(|(_, n)| n).sum();
    let prepared: BTreeMap<String, PathObjects> = done
        .into_iter()
        .map(|(p, _)| (p.narinfo_key().into_string(), p))
        .collect();

    let narinfos = sign_narinfos(&api, &options, &sessions, &pending, &prepared).await?;
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

    for (root, session) in roots.iter().zip(&sessions) {
        match api.complete(&session.id, &root.to_string()).await? {
            api::Completion::Committed => {}
            api::Completion::Gone(error) => confirm_committed(&api, root, &declared, error).await?,
        }
    }
    Ok(PushSummary {
        paths_total,
        paths_uploaded,
        objects_uploaded,
        bytes_uploaded: uploader.bytes_sent(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// After a commit whose answer was lost and whose session a retry then found gone:
/// objects enter the cache's database only by a commit, so a new session of the same
/// closure that needs nothing uploaded proves it was committed, and completing that
/// session makes `root` a GC root for certain. Anything still needed means the session
/// expired uncommitted: `error` stands.
async fn confirm_committed(
    api: &api::Api,
    root: &StorePath,
    declared: &BTreeMap<StorePath, DeclaredPath>,
    error: PushError,
) -> Result<(), PushError> {
    let session = api.start(&objects::closure_request(root, declared)).await?;
    if !session.pending_objects.is_empty() {
        return Err(error);
    }
    match api.complete(&session.id, &root.to_string()).await? {
        api::Completion::Committed => Ok(()),
        api::Completion::Gone(error) => Err(error),
    }
}

/// Declares every path of the closure from what Nix says, looking up (not reading) each
/// build log. A log that cannot be looked up is left out with a warning: logs are a
/// courtesy, a path without one is still worth pushing.
async fn declare_all(
    options: &PushOptions,
    infos: Vec<closure::PathInfo>,
) -> (
    BTreeMap<StorePath, DeclaredPath>,
    BTreeMap<StorePath, LogSource>,
) {
    let nix_store = options.build_logs.then_some(options.nix_store.as_path());
    let located: Vec<(closure::PathInfo, Option<LogSource>)> = futures::stream::iter(infos)
        .map(|info| async move {
            let log = match (&info.deriver, nix_store) {
                (Some(drv), Some(nix_store)) => match prepare::locate_log(nix_store, drv).await {
                    Ok(found) => found,
                    Err(message) => {
                        tracing::warn!(path = %info.path, "skipping the build log of {drv}: {message}");
                        None
                    }
                },
                _ => None,
            };
            (info, log)
        })
        .buffered(LOG_LOOKUPS)
        .collect()
        .await;
    let mut declared = BTreeMap::new();
    let mut logs = BTreeMap::new();
    for (info, log) in located {
        let key = match (&info.deriver, &log) {
            (Some(drv), Some(_)) => ObjectKey::build_log(drv).ok(),
            _ => None,
        };
        if let (Some(log), Some(_)) = (log, &key) {
            logs.insert(info.path.clone(), log);
        }
        declared.insert(info.path.clone(), DeclaredPath { info, log: key });
    }
    (declared, logs)
}

/// Build logs looked up at once (a stat each, or a `nix-store --read-log`).
const LOG_LOOKUPS: usize = 8;

/// Signs each pending narinfo in the session it is pending in; returns the narinfos to
/// upload, zstd-compressed, with how to upload each.
async fn sign_narinfos(
    api: &api::Api,
    options: &PushOptions,
    sessions: &[PendingClosureResponse],
    pending: &BTreeMap<String, (usize, PendingObject)>,
    prepared: &BTreeMap<String, PathObjects>,
) -> Result<Vec<(String, Bytes, PendingObject)>, PushError> {
    let mut narinfos = Vec::new();
    for (i, session) in sessions.iter().enumerate() {
        let mut request = SignRequest {
            narinfos: BTreeMap::new(),
        };
        for (key, (owner, object)) in pending {
            if *owner == i && object.kind == ObjectType::Narinfo {
                let path = prepared.get(key).ok_or_else(|| PushError::Http {
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
            let path = &prepared[key];
            let text = path.narinfo(&sigs).render();
            let body = prepare::compress_bytes(text.as_bytes(), options.compression_level)
                .map_err(|e| PushError::Prepare {
                    path: path.info.path.to_string(),
                    step: "compress the narinfo",
                    message: e.to_string(),
                })?;
            narinfos.push((key.clone(), body, pending[key].1.clone()));
        }
    }
    Ok(narinfos)
}
