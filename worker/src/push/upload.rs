//! Uploads to presigned URLs: one PUT, or a multipart upload whose parts go up in
//! parallel. A multipart upload someone else finished first (404 on a part) is skipped
//! once `HEAD /api/objects/{key}` confirms the object is there.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, ETAG};
use tokio::sync::Semaphore;

use super::wire::{
    CompleteMultipartRequest, CompletedPart, MultipartInfo, PendingObject, RequestPartsRequest,
};

use super::api::{send, Api};
use super::spool::Stored;
use super::PushError;

/// S3's limit on parts in one upload.
pub const MAX_PARTS: i64 = 10_000;
/// Most part URLs one `request-parts` call hands out.
pub const MAX_PARTS_PER_REQUEST: i64 = 1000;
/// Smallest part S3 accepts (all parts but the last).
pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
/// Bodies up to this size are read into memory for a single PUT; larger ones stream.
const STREAM_ABOVE: u64 = 16 * 1024 * 1024;
/// Chunk a streamed body is read in.
const STREAM_CHUNK: u64 = 1024 * 1024;

/// One part of a multipart upload: number (1-based), offset and length in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Part number.
    pub number: i64,
    /// First byte.
    pub offset: u64,
    /// Bytes in the part.
    pub len: u64,
}

/// Splits `size` bytes into parts of `part_size` (raised so no more than S3's 10,000
/// parts are needed); at least one part, even for empty data.
pub fn plan_parts(size: u64, part_size: u64) -> Vec<Part> {
    let max_parts = MAX_PARTS as u64;
    let part_size = part_size.max(MIN_PART_SIZE).max(size.div_ceil(max_parts));
    let count = size.div_ceil(part_size).max(1);
    (0..count)
        .map(|i| {
            let offset = i * part_size;
            Part {
                number: i as i64 + 1,
                offset,
                len: part_size.min(size - offset.min(size)),
            }
        })
        .collect()
}

/// What happened to an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Uploaded {
    /// These many bytes went up.
    Sent(u64),
    /// Someone else uploaded it meanwhile.
    AlreadyPresent,
}

/// Bytes to upload and the headers that describe them.
#[derive(Debug, Clone)]
pub struct Payload {
    /// The bytes.
    pub data: Stored,
    /// `Content-Type`, `Content-Encoding`, … (the answer's signed headers win).
    pub headers: Vec<(&'static str, &'static str)>,
}

/// Shared state of all uploads of one push.
#[derive(Debug, Clone)]
pub struct Uploader {
    api: Api,
    /// Limits requests in flight (and so part buffers in memory) to `--jobs`.
    permits: Arc<Semaphore>,
    part_size: u64,
    jobs: usize,
    progress: ProgressBar,
    bytes: Arc<AtomicU64>,
}

impl Uploader {
    /// An uploader sending at most `jobs` bodies at once.
    pub fn new(api: Api, jobs: usize, part_size: u64, progress: ProgressBar) -> Self {
        Self {
            api,
            permits: Arc::new(Semaphore::new(jobs.max(1))),
            part_size,
            jobs: jobs.max(1),
            progress,
            bytes: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Bytes sent so far.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Uploads `payload` as `key` the way `pending` says.
    pub async fn upload(
        &self,
        key: &str,
        what: &str,
        pending: &PendingObject,
        payload: &Payload,
    ) -> Result<Uploaded, PushError> {
        match (&pending.presigned_url, &pending.multipart_info) {
            (_, Some(info)) => self.multipart(key, what, info, payload).await,
            (Some(url), None) => {
                let step = format!("upload {key} ({what})");
                let headers = put_headers(&payload.headers, &pending.headers, &step)?;
                let len = payload.data.len();
                self.put(&step, url, &headers, &payload.data, 0, len)
                    .await?;
                Ok(Uploaded::Sent(len))
            }
            (None, None) => Err(PushError::Http {
                step: format!("upload {key} ({what})"),
                status: None,
                message: "the worker gave neither a presigned URL nor a multipart upload".into(),
            }),
        }
    }

    /// One PUT of `data[offset..offset+len]`; returns the response's ETag.
    async fn put(
        &self,
        step: &str,
        url: &str,
        headers: &HeaderMap,
        data: &Stored,
        offset: u64,
        len: u64,
    ) -> Result<Option<String>, PushError> {
        let _permit = self.permits.acquire().await.map_err(|_| PushError::Http {
            step: step.to_string(),
            status: None,
            message: "the upload was cancelled".into(),
        })?;
        let read_err = |e: std::io::Error| PushError::Http {
            step: step.to_string(),
            status: None,
            message: format!("reading the spooled data: {e}"),
        };
        let in_memory = if len <= STREAM_ABOVE || matches!(data, Stored::Memory(..)) {
            let data = data.clone();
            Some(
                tokio::task::spawn_blocking(move || data.read_range(offset, len))
                    .await
                    .map_err(|e| read_err(std::io::Error::other(e)))?
                    .map_err(read_err)?,
            )
        } else {
            None
        };
        let response = send(step, self.api.retry(), || {
            let body = match &in_memory {
                Some(bytes) => reqwest::Body::from(bytes.clone()),
                None => reqwest::Body::wrap_stream(stream_range(data.clone(), offset, len)),
            };
            self.api
                .http()
                .put(url)
                .headers(headers.clone())
                .header(CONTENT_LENGTH, len)
                .body(body)
        })
        .await?;
        self.bytes.fetch_add(len, Ordering::Relaxed);
        self.progress.inc(len);
        Ok(response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string))
    }

    async fn multipart(
        &self,
        key: &str,
        what: &str,
        info: &MultipartInfo,
        payload: &Payload,
    ) -> Result<Uploaded, PushError> {
        let parts = plan_parts(payload.data.len(), self.part_size);
        let urls = match self.part_urls(key, info, parts.len()).await {
            Ok(urls) => urls,
            Err(e) => return self.present_or(key, e).await,
        };
        let headers = put_headers(&payload.headers, &BTreeMap::new(), key)?;
        let uploads = futures::stream::iter(parts.iter().zip(urls))
            .map(|(part, url)| {
                let headers = &headers;
                async move {
                    let step = format!("upload part {} of {key} ({what})", part.number);
                    let etag = self
                        .put(&step, &url, headers, &payload.data, part.offset, part.len)
                        .await?
                        .ok_or_else(|| PushError::Http {
                            step,
                            status: None,
                            message: "the storage answered without an ETag".into(),
                        })?;
                    Ok::<_, PushError>(CompletedPart {
                        part_number: part.number,
                        etag,
                    })
                }
            })
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<_>>()
            .await;
        let mut completed = match uploads {
            Ok(c) => c,
            Err(e) => return self.present_or(key, e).await,
        };
        completed.sort_by_key(|p| p.part_number);
        let request = CompleteMultipartRequest {
            object_key: key.to_string(),
            upload_id: info.upload_id.clone(),
            parts: completed,
        };
        match self.api.complete_multipart(&request).await {
            Ok(()) => Ok(Uploaded::Sent(payload.data.len())),
            Err(e) => self.present_or(key, e).await,
        }
    }

    /// The part URLs the answer gave, plus more from `request-parts` when needed.
    async fn part_urls(
        &self,
        key: &str,
        info: &MultipartInfo,
        needed: usize,
    ) -> Result<Vec<String>, PushError> {
        let mut urls = info.part_urls.clone();
        while urls.len() < needed {
            let start = urls.len() as i64 + 1;
            let count = (needed - urls.len()).min(MAX_PARTS_PER_REQUEST as usize) as i64;
            let more = self
                .api
                .request_parts(&RequestPartsRequest {
                    object_key: key.to_string(),
                    upload_id: info.upload_id.clone(),
                    start_part_number: start,
                    num_parts: count,
                })
                .await?;
            if more.start_part_number != start || more.part_urls.is_empty() {
                return Err(PushError::Http {
                    step: format!("request part URLs {start}.. of {key}"),
                    status: None,
                    message: format!(
                        "asked for {count} URLs from part {start}, got {} from part {}",
                        more.part_urls.len(),
                        more.start_part_number
                    ),
                });
            }
            urls.extend(more.part_urls);
        }
        urls.truncate(needed);
        Ok(urls)
    }

    /// After a 404 on a multipart step (another client completed the same key, which
    /// aborts this upload): fine if the cache now holds the object, else `error`.
    async fn present_or(&self, key: &str, error: PushError) -> Result<Uploaded, PushError> {
        if matches!(
            error,
            PushError::Http {
                status: Some(404),
                ..
            }
        ) && self.api.exists(key).await?
        {
            tracing::debug!(key, "another upload finished this object first");
            return Ok(Uploaded::AlreadyPresent);
        }
        Err(error)
    }
}

/// Our descriptive headers, overridden by the ones the answer says the PUT must carry.
fn put_headers(
    ours: &[(&'static str, &'static str)],
    required: &BTreeMap<String, String>,
    step: &str,
) -> Result<HeaderMap, PushError> {
    let mut map = HeaderMap::new();
    for (name, value) in ours {
        map.insert(*name, HeaderValue::from_static(value));
    }
    for (name, value) in required {
        let bad = |what: &str| PushError::Http {
            step: step.to_string(),
            status: None,
            message: format!("the worker asked for an invalid header {what} {name:?}"),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| bad("name"))?;
        let value = HeaderValue::from_str(value).map_err(|_| bad("value for"))?;
        map.insert(name, value);
    }
    Ok(map)
}

/// `data[offset..offset+len]` as a stream of chunks read on blocking threads.
fn stream_range(
    data: Stored,
    offset: u64,
    len: u64,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let end = offset + len;
    futures::stream::try_unfold(offset, move |pos| {
        let data = data.clone();
        async move {
            if pos >= end {
                return Ok(None);
            }
            let n = STREAM_CHUNK.min(end - pos);
            let chunk = tokio::task::spawn_blocking(move || data.read_range(pos, n))
                .await
                .map_err(std::io::Error::other)??;
            Ok(Some((chunk, pos + n)))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    #[test]
    fn parts_cover_the_data_exactly() {
        let parts = plan_parts(25 * MIB + 3, 10 * MIB);
        assert_eq!(
            parts,
            [
                Part {
                    number: 1,
                    offset: 0,
                    len: 10 * MIB
                },
                Part {
                    number: 2,
                    offset: 10 * MIB,
                    len: 10 * MIB
                },
                Part {
                    number: 3,
                    offset: 20 * MIB,
                    len: 5 * MIB + 3
                },
            ]
        );
        assert_eq!(plan_parts(10 * MIB, 10 * MIB).len(), 1);
        assert_eq!(
            plan_parts(0, 10 * MIB),
            [Part {
                number: 1,
                offset: 0,
                len: 0
            }]
        );
    }

    #[test]
    fn parts_respect_s3_limits() {
        // Too small a part size is raised to S3's minimum.
        assert_eq!(plan_parts(12 * MIB, MIB)[0].len, MIN_PART_SIZE);
        // More than 10,000 parts would be needed: the part size grows instead.
        let huge = 200_000 * MIB;
        let parts = plan_parts(huge, 10 * MIB);
        assert!(parts.len() <= MAX_PARTS as usize);
        assert_eq!(parts.iter().map(|p| p.len).sum::<u64>(), huge);
        assert_eq!(parts.last().unwrap().number, parts.len() as i64);
    }

    #[test]
    fn required_headers_override_ours_and_bad_ones_are_refused() {
        let ours = [
            ("content-type", "application/x-nix-nar"),
            ("content-encoding", "zstd"),
        ];
        let mut required = BTreeMap::new();
        required.insert("x-amz-checksum-sha256".to_string(), "abc=".to_string());
        required.insert("Content-Type".to_string(), "text/plain".to_string());
        let map = put_headers(&ours, &required, "step").unwrap();
        assert_eq!(map["content-type"], "text/plain");
        assert_eq!(map["content-encoding"], "zstd");
        assert_eq!(map["x-amz-checksum-sha256"], "abc=");
        required.insert("bad name".to_string(), "x".to_string());
        assert!(put_headers(&ours, &required, "step").is_err());
    }
}
