//! `POST /api/pending_closures`: start an upload session.
//!
//! The database decides what must be uploaded (present objects are locked and stamped),
//! then three things run at once: the database writes the pending objects, single PUTs
//! are presigned on every core, and multipart uploads are created at the storage. The
//! multipart uploads are recorded in the session's own transaction, so a session that
//! fails to start leaves no rows behind.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use futures::StreamExt;

use crate::auth::Scope;
use crate::db::{now_ms, pending_start};
use crate::nix::{NixHash, ObjectType};
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::handlers::{json, presign_parts, presign_single, rfc3339, STORAGE_CONCURRENCY};
use super::plan::{self, UploadPlan};
use super::wire::{MultipartInfo, PendingClosureRequest, PendingClosureResponse, PendingObject};

/// A single PUT to presign: key, kind, declared SHA-256.
type Single = (String, ObjectType, Option<[u8; 32]>);
/// A multipart upload to create (NARs only): key, part URLs to hand out.
type Multi = (String, i64);

/// Starts a session; answers with how to upload each object the cache lacks.
pub async fn start(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<PendingClosureResponse>, ApiError> {
    let token = state.authorize(&headers, Scope::Push)?.to_owned();
    let clock = std::time::Instant::now();
    let request: PendingClosureRequest = json(&body)?;
    let objects = plan::closure_objects(&request)?;
    let parsed = clock.elapsed();
    let mut starting =
        pending_start::begin(state.db(), &request.closure, &objects, now_ms()).await?;
    let decided = clock.elapsed();

    let kinds: BTreeMap<&str, (ObjectType, Option<u64>)> = request
        .objects
        .iter()
        .map(|o| (o.key.as_str(), (o.kind, o.nar_size)))
        .collect();
    let checksums: BTreeMap<&str, Option<&str>> = objects
        .iter()
        .map(|o| (o.key.as_str(), o.file_hash.as_deref()))
        .collect();
    let mut singles: Vec<Single> = Vec::new();
    let mut multis: Vec<Multi> = Vec::new();
    for key in &starting.needs_upload {
        let (kind, nar_size) = kinds
            .get(key.as_str())
            .copied()
            .unwrap_or((ObjectType::Nar, None));
        match plan::upload_plan(kind, nar_size) {
            UploadPlan::Single => {
                let checksum = checksums
                    .get(key.as_str())
                    .copied()
                    .flatten()
                    .map(NixHash::parse)
                    .transpose()
                    .map_err(|e| ApiError::BadRequest(format!("{key}: {e}")))?
                    .map(|h| *h.digest());
                singles.push((key.clone(), kind, checksum));
            }
            UploadPlan::Multipart { initial_parts } => {
                multis.push((key.clone(), initial_parts));
            }
        }
    }
    let (recorded, presigned, created) = tokio::join!(
        starting.record(),
        presign_singles(&state, singles),
        create_multiparts(&state, multis),
    );
    let created = match created {
        Ok(created) => created,
        Err((e, orphans)) => {
            abort(&state, &orphans).await;
            return Err(e);
        }
    };
    let uploads: Vec<(String, String)> = created
        .iter()
        .map(|(key, upload_id, _)| (key.clone(), upload_id.clone()))
        .collect();
    let committed = match (recorded, presigned) {
        (Ok(()), Ok(presigned)) => starting
            .commit(&uploads)
            .await
            .map(|started| (started, presigned))
            .map_err(ApiError::from),
        (Err(e), _) => Err(e.into()),
        (_, Err(e)) => Err(e),
    };
    let (started, presigned) = match committed {
        Ok(committed) => committed,
        Err(e) => {
            abort(&state, &uploads).await;
            return Err(e);
        }
    };
    tracing::info!(
        token = %token,
        session = started.id,
        closure = %request.closure,
        objects = objects.len(),
        to_upload = started.needs_upload.len(),
        "push started"
    );
    // Where a big session's time goes, for whoever tunes a deployment.
    tracing::debug!(
        session = started.id,
        parse_ms = parsed.as_millis(),
        decide_ms = (decided - parsed).as_millis(),
        record_and_presign_ms = (clock.elapsed() - decided).as_millis(),
        "upload session started"
    );
    let mut pending_objects: BTreeMap<String, PendingObject> = presigned.into_iter().collect();
    pending_objects.extend(created.into_iter().map(|(key, _, object)| (key, object)));
    Ok(Json(PendingClosureResponse {
        id: started.id.to_string(),
        started_at: rfc3339(started.started_at),
        pending_objects,
    }))
}

/// Presigns single PUTs in one task per core: signing is CPU work, and a big closure
/// has thousands of them.
async fn presign_singles(
    state: &AppState,
    singles: Vec<Single>,
) -> Result<Vec<(String, PendingObject)>, ApiError> {
    if singles.is_empty() {
        return Ok(Vec::new());
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_task = singles.len().div_ceil(cores).max(256);
    let mut tasks = Vec::new();
    let mut rest = singles;
    while !rest.is_empty() {
        let chunk: Vec<Single> = rest.drain(..per_task.min(rest.len())).collect();
        let state = state.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(chunk.len());
            for (key, kind, checksum) in chunk {
                let object = presign_single(&state, &key, kind, checksum).await?;
                out.push((key, object));
            }
            Ok::<_, ApiError>(out)
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        let part = task
            .await
            .map_err(|e| ApiError::Internal(format!("presigning failed: {e}")))??;
        all.extend(part);
    }
    Ok(all)
}

/// One creation attempt: key, upload id, first part URLs.
type Attempt = (
    String,
    Result<String, ApiError>,
    Result<Vec<String>, ApiError>,
);

/// Created multipart uploads: key, upload id, and what the client is told.
type Created = Vec<(String, String, PendingObject)>;

/// Creates the multipart uploads and presigns their first parts. On error it returns
/// the `(key, upload id)` of every upload it created, for the caller to abort.
async fn create_multiparts(
    state: &AppState,
    multis: Vec<Multi>,
) -> Result<Created, (ApiError, Vec<(String, String)>)> {
    let ttl = state.presign_ttl();
    let results: Vec<Attempt> = futures::stream::iter(multis)
        .map(|(key, parts)| async move {
            let upload_id = state
                .storage()
                .create_multipart(&key)
                .await
                .map_err(ApiError::from);
            let part_urls = match &upload_id {
                Ok(id) => presign_parts(state, &key, id, 1..=parts, ttl).await,
                Err(_) => Ok(Vec::new()),
            };
            (key, upload_id, part_urls)
        })
        .buffer_unordered(STORAGE_CONCURRENCY)
        .collect()
        .await;
    let mut created = Vec::new();
    let mut orphans = Vec::new();
    let mut failure = None;
    for (key, upload_id, part_urls) in results {
        match (upload_id, part_urls) {
            (Ok(upload_id), Ok(part_urls)) => created.push((
                key,
                upload_id.clone(),
                PendingObject {
                    kind: ObjectType::Nar,
                    presigned_url: None,
                    multipart_info: Some(MultipartInfo {
                        upload_id,
                        part_urls,
                    }),
                    headers: BTreeMap::new(),
                },
            )),
            (Ok(upload_id), Err(e)) => {
                orphans.push((key, upload_id));
                failure.get_or_insert(e);
            }
            (Err(e), _) => {
                failure.get_or_insert(e);
            }
        }
    }
    match failure {
        None => Ok(created),
        Some(e) => {
            orphans.extend(created.into_iter().map(|(k, id, _)| (k, id)));
            Err((e, orphans))
        }
    }
}

/// Aborts multipart uploads `(key, upload id)` of a session that failed to start (best
/// effort: an upload left open costs storage until the bucket's lifecycle rule removes
/// it, nothing else).
async fn abort(state: &AppState, uploads: &[(String, String)]) {
    state
        .storage()
        .abort_all(uploads, STORAGE_CONCURRENCY)
        .await;
}
