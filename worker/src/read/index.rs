//! `nix-cache-index/…`: the binary cache index's files, and its `Index*` and
//! `BloomFilter` lines in `nix-cache-info`. Only paths that parse as an index file are
//! served; the object key is rebuilt from the parsed parts, never taken from the request.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;

use crate::auth::Scope;
use crate::index::files::{self, cache_control, content_type};
use crate::index::manifest::Manifest;
use crate::index::paths::IndexFile;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::storage::{Storage, StorageError};

use super::headers::{conditions, http_date, read_authorization, set};

/// Largest manifest read for `nix-cache-info` (a real one is under 2 KiB).
const MAX_MANIFEST: usize = 64 * 1024;
/// How long a missing index file may be cached: it may appear any moment.
const MISSING: &str = "public, max-age=5";

/// `GET`/`HEAD /nix-cache-index/…`.
pub async fn serve(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return Ok(StatusCode::METHOD_NOT_ALLOWED.into_response());
    }
    let headers = request.headers();
    if state.read_options().require_auth {
        state.authorize(&read_authorization(headers), Scope::Read)?;
    }
    let path = request.uri().path();
    let Ok(file) = IndexFile::parse_request(path) else {
        return Ok(missing("not an index file\n"));
    };
    let key = file.key();
    // A HEAD asks storage for the metadata only: a shard can be megabytes.
    if request.method() == Method::HEAD {
        let Some(meta) = state.storage().head(&key).await? else {
            return Ok(missing("no such index file\n"));
        };
        let (etag, modified) = (meta.etag.as_deref(), meta.last_modified);
        if crate::storage::not_modified(&conditions(headers), etag, modified) {
            return Ok(not_modified(&file));
        }
        return Ok((StatusCode::OK, found(&file, meta.size, etag, modified)).into_response());
    }
    let object = match state.storage().get(&key, None, &conditions(headers)).await {
        Ok(object) => object,
        Err(StorageError::NotModified { .. }) => return Ok(not_modified(&file)),
        Err(StorageError::NotFound { .. }) => return Ok(missing("no such index file\n")),
        Err(e) => return Err(e.into()),
    };
    let out = found(
        &file,
        object.size,
        object.etag.as_deref(),
        object.last_modified,
    );
    let body = Body::from_stream(object.body.map_err(std::io::Error::other));
    Ok((StatusCode::OK, out, body).into_response())
}

/// The headers of a 200 for `file` of `size` bytes, whether GET or HEAD.
fn found(
    file: &IndexFile,
    size: u64,
    etag: Option<&str>,
    modified: Option<std::time::SystemTime>,
) -> HeaderMap {
    let mut out = HeaderMap::new();
    set(&mut out, header::CONTENT_TYPE, content_type(file));
    set(&mut out, header::CACHE_CONTROL, cache_control(file));
    set(&mut out, header::CONTENT_LENGTH, &size.to_string());
    if let Some(etag) = etag {
        set(&mut out, header::ETAG, etag);
    }
    if let Some(modified) = modified {
        set(&mut out, header::LAST_MODIFIED, &http_date(modified));
    }
    out
}

fn not_modified(file: &IndexFile) -> Response {
    let mut response = StatusCode::NOT_MODIFIED.into_response();
    set(
        response.headers_mut(),
        header::CACHE_CONTROL,
        cache_control(file),
    );
    response
}

fn missing(text: &'static str) -> Response {
    let mut response = (StatusCode::NOT_FOUND, text).into_response();
    set(response.headers_mut(), header::CACHE_CONTROL, MISSING);
    response
}

/// The `nix-cache-info` lines of the published index: its `Index*` keys when a valid
/// manifest is stored, and `BloomFilter` when the filter is. Nothing when unreadable:
/// a cache without an index is still a cache.
pub async fn cache_info_lines(storage: &Storage) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    match files::get(storage, &IndexFile::Manifest, MAX_MANIFEST).await {
        Ok(Some(bytes)) => {
            let parsed = std::str::from_utf8(&bytes).ok().map(Manifest::from_json);
            match parsed {
                Some(Ok(m)) => lines.extend(m.to_cache_info().lines().filter_map(|l| {
                    let (k, v) = l.split_once(": ")?;
                    Some((k.to_owned(), v.to_owned()))
                })),
                _ => tracing::warn!("nix-cache-index/manifest.json is not a valid manifest"),
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!("reading the index manifest: {e}"),
    }
    if let Ok(Some(_)) = storage.head(&IndexFile::Bloom.key()).await {
        lines.push(("BloomFilter".to_owned(), IndexFile::Bloom.key()));
    }
    lines
}
