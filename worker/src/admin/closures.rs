//! `GET /api/closures/{key}`: a root and every object it reaches.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;

use crate::auth::Scope;
use crate::db::closures;
use crate::nix::{ObjectKey, ObjectType};
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::rfc3339;

/// niks3's closure JSON (`id` is the root's narinfo key).
#[derive(Debug, Serialize)]
pub struct ClosureResponse {
    id: String,
    updated_at: String,
    objects: Vec<String>,
}

/// The closure rooted at a narinfo key, or 404.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ClosureResponse>, ApiError> {
    state.authorize(&headers, Scope::Admin)?;
    ObjectKey::parse_as(&key, ObjectType::Narinfo)
        .map_err(|e| ApiError::BadRequest(format!("invalid closure key: {e}")))?;
    let closure = closures::get(state.db(), &key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("closure {key} not found")))?;
    Ok(Json(ClosureResponse {
        id: closure.key,
        updated_at: rfc3339(closure.updated_at),
        objects: closure.objects,
    }))
}
