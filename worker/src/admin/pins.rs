//! `GET /api/pins`, `POST /api/pins/{name}` `{"store_path"}`, `DELETE /api/pins/{name}`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use crate::auth::Scope;
use crate::db::pins::PinOutcome;
use crate::db::{now_ms, pins};
use crate::nix::StorePath;
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::rfc3339;

/// A pin as niks3's client lists it.
#[derive(Debug, Serialize)]
pub struct PinInfo {
    name: String,
    store_path: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize)]
struct CreatePin {
    store_path: String,
}

/// Pin names as niks3 allows them: `[a-zA-Z0-9._-]{1,256}`.
pub fn check_name(name: &str) -> Result<(), ApiError> {
    let valid = (1..=256).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "invalid pin name {}: 1 to 256 of letters, digits, '.', '_' and '-'",
            crate::nix::preview(name)
        )))
    }
}

/// Lists every pin.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<PinInfo>>, ApiError> {
    state.authorize(&headers, Scope::Admin)?;
    let pins = pins::list(state.db()).await?;
    Ok(Json(
        pins.into_iter()
            .map(|p| PinInfo {
                name: p.name,
                store_path: p.store_path,
                created_at: rfc3339(p.created_at),
                updated_at: rfc3339(p.updated_at),
            })
            .collect(),
    ))
}

/// Pins a pushed store path's closure under a name (replacing what the name pinned).
pub async fn create(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let token = state.authorize(&headers, Scope::Admin)?.to_owned();
    check_name(&name)?;
    let request: CreatePin = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))?;
    let path = StorePath::parse(&request.store_path)
        .map_err(|e| ApiError::BadRequest(format!("invalid store path: {e}")))?;
    let key = format!("{}.narinfo", path.hash_part());
    match pins::create(state.db(), &name, &path.to_string(), &key, now_ms()).await? {
        PinOutcome::Pinned => {
            tracing::info!(token = %token, pin = %name, store_path = %path, "pinned");
            Ok(StatusCode::NO_CONTENT)
        }
        PinOutcome::NotPushed => Err(ApiError::NotFound(format!(
            "{path} is not in this cache: push it before pinning"
        ))),
        PinOutcome::Incomplete(keys) => Err(ApiError::Conflict(format!(
            "the closure of {path} is being collected ({} object(s), e.g. {}): push it again, \
             then pin",
            keys.len(),
            keys.first().map(String::as_str).unwrap_or_default()
        ))),
    }
}

/// Removes a pin; its closure expires like any other from then on.
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = state.authorize(&headers, Scope::Admin)?.to_owned();
    check_name(&name)?;
    if pins::delete(state.db(), &name).await? {
        tracing::info!(token = %token, pin = %name, "unpinned");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no pin named {name}")))
    }
}
