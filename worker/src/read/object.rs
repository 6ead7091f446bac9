//! Objects of the cache: narinfos, NARs, listings, logs, realisations.

use std::cell::RefCell;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use futures::TryStreamExt;

use crate::auth::Scope;
use crate::nix::{ObjectKey, ObjectType};
use crate::server::error::ApiError;
use crate::server::metrics::Metrics;
use crate::server::state::AppState;
use crate::storage::{ByteRange, Conditions, ContentRange, GetObject, Storage, StorageError};

use super::headers::{conditions, http_date, read_authorization, set, IfRange};

/// Largest narinfo the proxy decompresses (real ones are a few KiB).
const MAX_NARINFO: usize = 1 << 20;
/// How long a redirected NAR URL stays valid.
const REDIRECT_TTL: Duration = Duration::from_secs(3600);

fn cache_control(kind: ObjectType) -> &'static str {
    match kind {
        // Named by content hash: never changes.
        ObjectType::Nar => "public, max-age=31536000, immutable",
        // A re-push may add signatures or FileHash; keep it short.
        ObjectType::Narinfo | ObjectType::Realisation => "public, max-age=300",
        ObjectType::Listing | ObjectType::BuildLog => "public, max-age=3600",
    }
}

fn content_type(kind: ObjectType) -> &'static str {
    match kind {
        ObjectType::Narinfo => "text/x-nix-narinfo",
        ObjectType::Nar => "application/x-nix-nar",
        ObjectType::Listing | ObjectType::Realisation => "application/json",
        ObjectType::BuildLog => "text/plain; charset=utf-8",
    }
}

/// `GET`/`HEAD` of any object key.
pub async fn serve(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
    }
    let headers = request.headers();
    if state.read_options().require_auth {
        state.authorize(&read_authorization(headers), Scope::Read)?;
    }
    let raw = request.uri().path().trim_start_matches('/');
    let decoded = percent_encoding::percent_decode_str(raw).decode_utf8_lossy();
    // A key that cannot exist is simply absent: the read side answers 404, not 400.
    let key = ObjectKey::parse(&decoded).ok().ok_or_else(|| {
        ApiError::NotFound(format!("no such object: {}", crate::nix::preview(raw)))
    })?;
    let kind = key.object_type();
    let metrics = request.extensions().get::<Metrics>().cloned();
    let method = request.method().clone();
    let response = answer(&state, &method, headers, &key, metrics.as_ref()).await?;
    Ok(match metrics {
        Some(metrics) if method == Method::GET => {
            response.map(|body| super::counted::counted(body, metrics.read_bytes(kind)))
        }
        _ => response,
    })
}

/// The answer to a GET or HEAD of `key`.
async fn answer(
    state: &AppState,
    method: &Method,
    headers: &HeaderMap,
    key: &ObjectKey,
    metrics: Option<&Metrics>,
) -> Result<Response, ApiError> {
    let kind = key.object_type();
    // Only GETs are redirected: the URL is signed for GET, so S3 refuses a HEAD of it
    // (403), and a HEAD answered here reads no bytes through the worker anyway.
    let is_get = *method == Method::GET;
    if kind == ObjectType::Nar && is_get && state.read_options().redirect_nars {
        if let Some(url) = state
            .storage()
            .presign_get(key.as_str(), REDIRECT_TTL)
            .await?
        {
            return Ok(Redirect::temporary(&url).into_response());
        }
    }
    if kind == ObjectType::Narinfo {
        // A narinfo is rewritten on the way (decompressed), so ranges of it are not served.
        // A HEAD of one reads it like a GET: its Content-Length is the decompressed length,
        // which only reading tells, and the read is of a few hundred bytes that then fill
        // the narinfo cache (Nix asks whether a cache has a path with a HEAD of its narinfo).
        return narinfo(state, key.as_str(), headers, metrics).await;
    }
    // A Range we cannot serve (several ranges, another unit, `5-2`) is ignored and the
    // whole object sent, as RFC 9110 §14.2 says and S3 itself does; a 400 would fail a
    // download that needed no range at all.
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|value| ByteRange::parse(value).ok());
    // If-Range only conditions a Range (§13.1.5); without one it means nothing.
    let if_range = range.and_then(|_| IfRange::of(headers));
    if *method == Method::HEAD {
        return super::head::serve(state, kind, key.as_str(), range, if_range.as_ref(), headers)
            .await;
    }
    let conditions = conditions(headers);
    match get(
        state.storage(),
        key.as_str(),
        range,
        if_range.as_ref(),
        &conditions,
    )
    .await
    {
        Ok(object) => Ok(stream(kind, object)),
        Err(e) => failure(kind, e),
    }
}

/// A GET of `key` whose `range` is served only while `if_range` (if any) matches. The
/// check is of the validators of the ranged answer itself, so the bytes sent are of the
/// version checked; on a mismatch the whole object is read instead.
async fn get(
    storage: &Storage,
    key: &str,
    range: Option<ByteRange>,
    if_range: Option<&IfRange>,
    conditions: &Conditions,
) -> Result<GetObject, StorageError> {
    let ranged = storage.get(key, range, conditions).await;
    let Some(if_range) = if_range else {
        return ranged;
    };
    match ranged {
        Ok(object) if if_range.matches(object.etag.as_deref(), object.last_modified) => Ok(object),
        // The ranged answer is dropped unread: on S3 that costs its connection, and a
        // mismatch means the client's copy is stale, which is rare.
        Ok(_) => storage.get(key, None, conditions).await,
        // Past the end of the current version: 416 only if it is the client's version.
        Err(StorageError::InvalidRange { .. }) => match storage.head(key).await? {
            Some(meta) if if_range.matches(meta.etag.as_deref(), meta.last_modified) => {
                Err(StorageError::InvalidRange {
                    op: "get",
                    key: key.to_string(),
                    size: Some(meta.size),
                })
            }
            _ => storage.get(key, None, conditions).await,
        },
        Err(e) => Err(e),
    }
}

/// A narinfo: from the narinfo cache, else from the bucket (decompressed if stored
/// zstd-compressed, as niks3 and `larder push` store them) and then cached.
async fn narinfo(
    state: &AppState,
    key: &str,
    headers: &HeaderMap,
    metrics: Option<&Metrics>,
) -> Result<Response, ApiError> {
    let kind = ObjectType::Narinfo;
    let conditions = conditions(headers);
    let cache = state.narinfo_cache();
    let hit = cache.get(key);
    if let Some(metrics) = metrics {
        metrics.narinfo_lookup(hit.is_some());
    }
    if let Some(hit) = hit {
        if crate::storage::not_modified(&conditions, hit.etag.as_deref(), hit.last_modified) {
            return Ok(not_modified(kind));
        }
        let headers = validators(kind, hit.etag.as_deref(), hit.last_modified);
        return Ok((StatusCode::OK, headers, hit.body).into_response());
    }
    let object = match state.storage().get(key, None, &conditions).await {
        Ok(object) => object,
        Err(e) => return failure(kind, e),
    };
    let zstd = match object.content_encoding.as_deref() {
        None => false,
        Some("zstd") => true,
        // Some other encoding: passed on as stored, not cached.
        Some(_) => return Ok(stream(kind, object)),
    };
    let headers = validators(kind, object.etag.as_deref(), object.last_modified);
    let (etag, last_modified) = (object.etag.clone(), object.last_modified);
    let stored = read_bounded(object).await?;
    let body =
        if zstd {
            Bytes::from(decompress_bounded(&stored, MAX_NARINFO).map_err(|e| {
                ApiError::Internal(format!("stored narinfo does not decompress: {e}"))
            })?)
        } else {
            stored
        };
    cache.insert(key, body.clone(), etag, last_modified);
    Ok((StatusCode::OK, headers, body).into_response())
}

/// The answer to a storage error of a read.
pub(super) fn failure(kind: ObjectType, e: StorageError) -> Result<Response, ApiError> {
    match e {
        StorageError::NotModified { .. } => Ok(not_modified(kind)),
        StorageError::NotFound { .. } => {
            let mut response = (StatusCode::NOT_FOUND, "not in this cache\n").into_response();
            // Short negative caching: a push may add it any moment.
            set(
                response.headers_mut(),
                header::CACHE_CONTROL,
                "public, max-age=10",
            );
            Ok(response)
        }
        StorageError::InvalidRange { size, .. } => {
            let mut response = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
            if let Some(size) = size {
                set(
                    response.headers_mut(),
                    header::CONTENT_RANGE,
                    &format!("bytes */{size}"),
                );
            }
            Ok(response)
        }
        e => Err(e.into()),
    }
}

/// A 304 Not Modified, with the Cache-Control of a 200.
pub(super) fn not_modified(kind: ObjectType) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    set(
        response.headers_mut(),
        header::CACHE_CONTROL,
        cache_control(kind),
    );
    response
}

/// The headers every answer with a body has: type, caching, and the object's validators.
fn validators(
    kind: ObjectType,
    etag: Option<&str>,
    last_modified: Option<std::time::SystemTime>,
) -> HeaderMap {
    let mut h = HeaderMap::new();
    set(&mut h, header::CONTENT_TYPE, content_type(kind));
    set(&mut h, header::CACHE_CONTROL, cache_control(kind));
    if let Some(etag) = etag {
        set(&mut h, header::ETAG, etag);
    }
    if let Some(modified) = last_modified {
        set(&mut h, header::LAST_MODIFIED, &http_date(modified));
    }
    h
}

fn stream(kind: ObjectType, object: GetObject) -> Response {
    let (status, headers) = body_headers(
        kind,
        object.etag.as_deref(),
        object.last_modified,
        object.content_encoding.as_deref(),
        object.size,
        object.content_range,
    );
    let body = Body::from_stream(object.body.map_err(std::io::Error::other));
    (status, headers, body).into_response()
}

/// Status and headers of an object's bytes (`size` of them, a range when `content_range`
/// says so), the same for a GET and a HEAD.
pub(super) fn body_headers(
    kind: ObjectType,
    etag: Option<&str>,
    last_modified: Option<std::time::SystemTime>,
    content_encoding: Option<&str>,
    size: u64,
    content_range: Option<ContentRange>,
) -> (StatusCode, HeaderMap) {
    let status = if content_range.is_some() {
        StatusCode::PARTIAL_CONTENT
    } else {
        StatusCode::OK
    };
    let mut headers = validators(kind, etag, last_modified);
    set(&mut headers, header::ACCEPT_RANGES, "bytes");
    set(&mut headers, header::CONTENT_LENGTH, &size.to_string());
    if let Some(range) = &content_range {
        set(&mut headers, header::CONTENT_RANGE, &range.to_string());
    }
    if let Some(encoding) = content_encoding {
        set(&mut headers, header::CONTENT_ENCODING, encoding);
    }
    (status, headers)
}

/// The whole body of a stored narinfo, refused past [`MAX_NARINFO`] bytes.
async fn read_bounded(object: GetObject) -> Result<Bytes, ApiError> {
    if object.size > MAX_NARINFO as u64 {
        return Err(ApiError::Internal(
            "stored narinfo is implausibly large".into(),
        ));
    }
    let mut body = Vec::with_capacity(object.size as usize);
    let mut chunks = object.body;
    while let Some(chunk) = chunks.try_next().await? {
        if body.len() + chunk.len() > MAX_NARINFO {
            return Err(ApiError::Internal(
                "stored narinfo is implausibly large".into(),
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(body))
}

thread_local! {
    /// One zstd decompression context per thread: creating one (a ~100 KiB allocation
    /// set up from scratch) cost more than decompressing a narinfo of a few hundred bytes,
    /// and was a tenth of the worker's CPU per uncached narinfo read.
    static DCTX: RefCell<Option<zstd::zstd_safe::DCtx<'static>>> = const { RefCell::new(None) };
}

/// zstd-decompresses at most `max` bytes; more is an error, so a bomb cannot blow up memory.
fn decompress_bounded(data: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    DCTX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let dctx = match slot.as_mut() {
            Some(dctx) => dctx,
            None => slot.insert(zstd::zstd_safe::DCtx::try_create().ok_or_else(|| {
                std::io::Error::other("zstd could not allocate a decompression context")
            })?),
        };
        let mut out = Vec::new();
        // `with_context` resets the session (whatever a failed earlier read left behind)
        // and reads straight from the slice, without an input buffer of its own.
        zstd::stream::read::Decoder::with_context(data, dctx)
            .take(max as u64 + 1)
            .read_to_end(&mut out)?;
        if out.len() > max {
            return Err(std::io::Error::other(format!(
                "decompresses past {max} bytes"
            )));
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decompression_reuses_its_context_across_good_and_bad_input() {
        let text = b"StorePath: /nix/store/abc-x\nURL: nar/abc.nar.zst\n".repeat(4);
        let z = zstd::stream::encode_all(&text[..], 3).unwrap();
        assert_eq!(decompress_bounded(&z, MAX_NARINFO).unwrap(), text);
        // A truncated frame fails, and leaves nothing behind for the next narinfo.
        assert!(decompress_bounded(&z[..z.len() / 2], MAX_NARINFO).is_err());
        assert!(decompress_bounded(b"not zstd", MAX_NARINFO).is_err());
        assert_eq!(decompress_bounded(&z, MAX_NARINFO).unwrap(), text);
        // Past the bound is an error, exactly at it is not.
        assert!(decompress_bounded(&z, text.len() - 1).is_err());
        assert_eq!(decompress_bounded(&z, text.len()).unwrap(), text);
        let bomb = zstd::stream::encode_all(&vec![0u8; 4 << 20][..], 3).unwrap();
        assert!(decompress_bounded(&bomb, MAX_NARINFO).is_err());
        assert_eq!(decompress_bounded(&z, MAX_NARINFO).unwrap(), text);
    }
}
