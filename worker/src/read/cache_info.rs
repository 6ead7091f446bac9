//! `nix-cache-info`: rendered from configuration and the published index manifest,
//! never stored or client-writable.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::Scope;
use crate::nix::CacheInfo;
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::headers::{conditions, read_authorization};

/// `GET /nix-cache-info`.
pub async fn serve(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if state.read_options().require_auth {
        state.authorize(&read_authorization(&headers), Scope::Read)?;
    }
    let mut info = CacheInfo::default();
    info.priority = Some(state.read_options().priority);
    for (key, value) in super::index::cache_info_lines(state.storage()).await {
        // Lines come from a validated manifest; one that still does not fit is left out.
        let _ = info.set_extra(&key, &value);
    }
    let body = info.render();
    // The Index* lines change with every published segment: let caches revalidate.
    let etag = format!("\"{:016x}\"", xxhash_rust::xxh64::xxh64(body.as_bytes(), 0));
    // The same evaluation as every other object's (a list, weak tags, `*`).
    let unchanged = crate::storage::not_modified(&conditions(&headers), Some(&etag), None);
    let mut response = if unchanged {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        body.into_response()
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).unwrap_or(HeaderValue::from_static("\"0\"")),
    );
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/x-nix-cache-info"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    Ok(response)
}
