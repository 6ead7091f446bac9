//! `nix-cache-info`: rendered from configuration, never stored or client-writable.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use crate::auth::Scope;
use crate::nix::CacheInfo;
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::headers::read_authorization;

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
    let mut response = info.render().into_response();
    let h = response.headers_mut();
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
