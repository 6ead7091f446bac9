//! `DELETE /api/closures` (start a GC run in the background) and `GET /api/gc/status`.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::auth::Scope;
use crate::db::now_ms;
use crate::gc::GcOptions;
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::upload::handlers::parse_duration;

use super::gc_task::{GcParams, Start};
use super::rfc3339;

/// Query of `DELETE /api/closures`.
#[derive(Debug, Deserialize)]
pub struct StartQuery {
    #[serde(rename = "older-than")]
    older_than: Option<String>,
    #[serde(rename = "failed-uploads-older-than")]
    failed_uploads_older_than: Option<String>,
    /// niks3's older name for the same parameter.
    #[serde(rename = "pending-older-than")]
    pending_older_than: Option<String>,
    force: Option<String>,
}

/// Starts (or joins) a GC run: 202 with the task, 409 when a different one runs.
pub async fn start(
    State(state): State<AppState>,
    Query(query): Query<StartQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = state.authorize(&headers, Scope::Admin)?.to_owned();
    let older_than = query
        .older_than
        .ok_or_else(|| ApiError::BadRequest("missing older-than (e.g. older-than=720h)".into()))?;
    let failed = query
        .failed_uploads_older_than
        .or(query.pending_older_than)
        .unwrap_or_else(|| "6h".into());
    let force = query.force.as_deref() == Some("true");
    let options = GcOptions {
        older_than: parse_duration(&older_than)?,
        failed_uploads_older_than: parse_duration(&failed)?,
        // As niks3: objects stay marked as long as an upload may still reference them,
        // unless forced.
        grace: if force {
            std::time::Duration::ZERO
        } else {
            parse_duration(&failed)?
        },
        dry_run: false,
    };
    let params = GcParams {
        older_than,
        failed_uploads_older_than: failed,
        force,
    };
    match state.gc_tasks().start(params, rfc3339(now_ms())) {
        Start::New(task) => {
            tracing::info!(
                token = %token,
                older_than = %humantime::format_duration(options.older_than),
                failed_uploads_older_than =
                    %humantime::format_duration(options.failed_uploads_older_than),
                force,
                "garbage collection started"
            );
            let runner = state.clone();
            tokio::spawn(async move {
                let result = crate::gc::run(runner.db(), runner.storage(), &options).await;
                // Deleted narinfos must not outlive the run in this worker's memory.
                runner.narinfo_cache().clear();
                if let Err(e) = &result {
                    tracing::error!("GC run started through the API failed: {e}");
                }
                let result = result.as_ref().map_err(ToString::to_string);
                runner.gc_tasks().finish(result, rfc3339(now_ms()));
            });
            Ok((StatusCode::ACCEPTED, Json(task)).into_response())
        }
        Start::Joined(task) => Ok((StatusCode::ACCEPTED, Json(task)).into_response()),
        Start::Conflict(task) => Ok((
            StatusCode::CONFLICT,
            Json(serde_json::json!({
                "error": "a different garbage collection is already running",
                "active_task": task,
            })),
        )
            .into_response()),
    }
}

/// The current or last task; 404 when this worker has run none.
pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.authorize(&headers, Scope::Admin)?;
    match state.gc_tasks().status() {
        Some(task) => Ok(Json(task).into_response()),
        None => Err(ApiError::NotFound(
            "no garbage collection has run on this worker yet".into(),
        )),
    }
}
