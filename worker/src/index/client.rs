//! A client of a cache's published index over HTTP: the manifest (from `nix-cache-info`,
//! else `manifest.json`), every retained journal segment, and only the shards the asked
//! hashes need, each fetched at most once and many at a time. The answers themselves
//! come from [`Querier`], so a transport error means "unknown", never "absent".

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use ruint::aliases::U160;
use thiserror::Error;

use super::compress::DEFAULT_MAX_DECOMPRESSED;
use super::hash::Prefix;
use super::journal::{latest_ops, parse_segment, segments_to_read, Change, Op};
use super::manifest::{Manifest, ManifestError};
use super::paths::ROOT;
use super::query::{Answer, IndexFetch, Querier};

/// Files fetched at once.
const CONCURRENCY: usize = 16;
/// Largest manifest or journal segment accepted.
const MAX_TEXT: usize = 64 << 20;

/// Why the index could not be read.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url} is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("the cache's index manifest: {0}")]
    Manifest(#[from] ManifestError),
    #[error("cache URL {0:?} is not an http(s) URL")]
    Url(String),
}

/// A client of one cache.
#[derive(Debug)]
pub struct IndexClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    requests: AtomicU64,
}

/// Files already fetched, served to [`Querier`]; anything else is a transport error.
#[derive(Debug, Default)]
struct Fetched {
    journal: HashMap<u64, Option<Vec<u8>>>,
    shards: HashMap<(u64, Prefix), Option<Vec<u8>>>,
}

impl IndexFetch for Fetched {
    type Error = ();

    fn journal_segment(&mut self, id: u64) -> Result<Option<Vec<u8>>, ()> {
        self.journal.remove(&id).ok_or(())
    }

    fn shard(&mut self, epoch: u64, prefix: Prefix) -> Result<Option<Vec<u8>>, ()> {
        self.shards.remove(&(epoch, prefix)).ok_or(())
    }
}

impl IndexClient {
    /// A client for the cache at `cache_url`; `token` goes only to URLs under it.
    pub fn new(
        http: reqwest::Client,
        cache_url: &str,
        token: Option<String>,
    ) -> Result<Self, ClientError> {
        let base = cache_url.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Url(cache_url.chars().take(200).collect()));
        }
        Ok(IndexClient {
            http,
            base,
            token,
            requests: AtomicU64::new(0),
        })
    }

    /// HTTP requests sent so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// The body of `url`, `None` on 404.
    async fn fetch(&self, url: &str, limit: usize) -> Result<Option<Vec<u8>>, ClientError> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        // reqwest's own message ("error sending request") leaves out why.
        let http_error = |e: reqwest::Error| ClientError::Http {
            url: url.to_owned(),
            message: crate::report::error_chain(&e),
        };
        let mut request = self.http.get(url);
        if let Some(token) = self.token.as_deref() {
            if url.starts_with(&format!("{}/", self.base)) {
                request = request.bearer_auth(token);
            }
        }
        let mut response = request.send().await.map_err(http_error)?;
        match response.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            status => {
                return Err(ClientError::Status {
                    url: url.to_owned(),
                    status,
                })
            }
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            if body.len() + chunk.len() > limit {
                return Err(ClientError::TooLarge {
                    url: url.to_owned(),
                    limit,
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Some(body))
    }

    /// The cache's index manifest, `None` when it publishes none.
    pub async fn manifest(&self) -> Result<Option<Manifest>, ClientError> {
        let info = self
            .fetch(&format!("{}/nix-cache-info", self.base), MAX_TEXT)
            .await?;
        let text = info
            .as_deref()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        if text.lines().any(|l| l.starts_with("IndexVersion:")) {
            return Ok(Some(Manifest::from_cache_info(&text)?));
        }
        // RFC drafts 1–2 (and the ncps prototype) publish only manifest.json.
        let url = format!("{}/{ROOT}/manifest.json", self.base);
        match self.fetch(&url, MAX_TEXT).await? {
            Some(json) => Ok(Some(Manifest::from_json(&String::from_utf8_lossy(&json))?)),
            None => Ok(None),
        }
    }

    /// The index's answer for each hash, in order.
    pub async fn query(&self, manifest: &Manifest, hashes: &[U160]) -> Vec<Answer> {
        let unknown = || vec![Answer::Unknown; hashes.len()];
        let ids = segments_to_read(
            manifest.journal_current_segment,
            manifest.journal_segment_duration_seconds,
            manifest.journal_retention_count,
        );
        let Ok(journal) = self
            .fetch_all(ids.iter().map(|&id| {
                let url = format!("{}{id}.log", manifest.journal_base);
                (id, url)
            }))
            .await
        else {
            return unknown();
        };
        // Shards are needed for every hash the journal does not say `-` about.
        let mut segments: Vec<Vec<Change>> = Vec::new();
        for id in &ids {
            if let Some(Some(bytes)) = journal.get(id) {
                match std::str::from_utf8(bytes).ok().map(parse_segment) {
                    Some(Ok(changes)) => segments.push(changes),
                    _ => return unknown(),
                }
            }
        }
        let ops = latest_ops(segments.iter().map(Vec::as_slice));
        let prefixes: HashSet<Prefix> = hashes
            .iter()
            .filter(|h| ops.get(h) != Some(&Op::Remove))
            .map(|&h| manifest.depth.split(h).0)
            .collect();
        let shard_url =
            |epoch: u64, p: Prefix| format!("{}{epoch}/{p}.idx.zst", manifest.shards_base);
        let current = manifest.epoch_current;
        let mut shards = self
            .fetch_each(
                prefixes
                    .iter()
                    .map(|&p| ((current, p), shard_url(current, p))),
            )
            .await;
        let previous = manifest.epoch_previous;
        if previous >= 1 {
            let missing: Vec<Prefix> = shards
                .iter()
                .filter(|(_, v)| matches!(v, Some(None)))
                .map(|(&(_, p), _)| p)
                .collect();
            shards.extend(
                self.fetch_each(
                    missing
                        .into_iter()
                        .map(|p| ((previous, p), shard_url(previous, p))),
                )
                .await,
            );
        }
        let fetched = Fetched {
            journal,
            // A failed fetch stays out of the map: the Querier sees a transport error.
            shards: shards
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect(),
        };
        let mut querier = Querier::new(manifest.clone(), fetched);
        hashes.iter().map(|&h| querier.query(h)).collect()
    }

    /// Fetches every URL; the first failure fails all.
    async fn fetch_all<K>(
        &self,
        urls: impl Iterator<Item = (K, String)>,
    ) -> Result<HashMap<K, Option<Vec<u8>>>, ClientError>
    where
        K: std::hash::Hash + Eq,
    {
        futures::stream::iter(urls)
            .map(|(k, url)| async move { self.fetch(&url, MAX_TEXT).await.map(|v| (k, v)) })
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await
    }

    /// Fetches every URL; each failure is `None` for its key alone.
    async fn fetch_each<K>(
        &self,
        urls: impl Iterator<Item = (K, String)>,
    ) -> HashMap<K, Option<Option<Vec<u8>>>>
    where
        K: std::hash::Hash + Eq,
    {
        futures::stream::iter(urls)
            .map(|(k, url)| async move {
                let got = self.fetch(&url, DEFAULT_MAX_DECOMPRESSED).await;
                (k, got.ok())
            })
            .buffer_unordered(CONCURRENCY)
            .collect()
            .await
    }
}
