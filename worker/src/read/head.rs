//! `HEAD` of an object other than a narinfo: its metadata from storage, never its bytes.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use crate::nix::ObjectType;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::storage::{ByteRange, StorageError};

use super::headers::{conditions, IfRange};
use super::object::{body_headers, failure, not_modified};

/// `HEAD` of an object other than a narinfo: a HEAD to storage, so a HEAD of a 1 GiB NAR
/// reads none of it, answered with the status and headers a GET would get (RFC 9110
/// §9.3.2), conditions, Range and If-Range evaluated here against the object's metadata.
pub async fn serve(
    state: &AppState,
    kind: ObjectType,
    key: &str,
    range: Option<ByteRange>,
    if_range: Option<&IfRange>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let Some(meta) = state.storage().head(key).await? else {
        return failure(kind, StorageError::not_found("head", key));
    };
    let (etag, modified) = (meta.etag.as_deref(), meta.last_modified);
    if crate::storage::not_modified(&conditions(headers), etag, modified) {
        return Ok(not_modified(kind));
    }
    let range = range.filter(|_| if_range.is_none_or(|r| r.matches(etag, modified)));
    let content_range = match range.map(|r| r.resolve(meta.size)).transpose() {
        Ok(content_range) => content_range,
        Err(_) => {
            return failure(
                kind,
                StorageError::InvalidRange {
                    op: "head",
                    key: key.to_string(),
                    size: Some(meta.size),
                },
            )
        }
    };
    let size = content_range.map_or(meta.size, |r| r.len());
    let (status, headers) = body_headers(
        kind,
        etag,
        modified,
        meta.content_encoding.as_deref(),
        size,
        content_range,
    );
    // No body: hyper keeps the Content-Length set here for a HEAD.
    Ok((status, headers).into_response())
}
