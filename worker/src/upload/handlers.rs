//! HTTP handlers of the upload API. Decisions live in `plan` and `db::pending`;
//! these glue requests to them and to storage.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, head, post};
use axum::{Json, Router};
use futures::{StreamExt, TryStreamExt};
use serde::de::DeserializeOwned;

use crate::auth::Scope;
use crate::db::{now_ms, pending, pending_sign};
use crate::nix::{NixHash, ObjectKey, ObjectType, StorePath};
use crate::server::error::ApiError;
use crate::server::state::AppState;
use crate::storage::{CompletedPart, PutPresign};

use super::plan;
use super::wire::*;

/// Version of the API Larder speaks (niks3's, plus additive fields).
pub const API_VERSION: u32 = 1;
/// Storage calls made at once while preparing or checking a closure.
pub(super) const STORAGE_CONCURRENCY: usize = 32;

/// Routes of the write API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/cache-config", get(cache_config))
        .route(
            "/api/pending_closures",
            post(super::session::start).delete(cleanup),
        )
        .route("/api/pending_closures/{id}/sign", post(sign))
        .route(
            "/api/pending_closures/{id}/files",
            post(super::files::declare),
        )
        .route("/api/pending_closures/{id}/complete", post(complete))
        .route("/api/multipart/request-parts", post(request_parts))
        .route("/api/multipart/complete", post(complete_multipart))
        .route("/api/objects/{*key}", head(head_object))
}

/// Parses a JSON body, answering 400 with serde's message when it is malformed.
pub(super) fn json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("invalid JSON: {e}")))
}

/// Session ids are decimal; anything else names no session.
pub(super) fn session_id(raw: &str) -> Result<i64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::NotFound(format!("no pending closure {}", crate::nix::preview(raw))))
}

pub(super) fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

async fn cache_config(State(state): State<AppState>) -> Json<CacheConfig> {
    Json(CacheConfig {
        substituter_url: state.public_url().to_string(),
        public_keys: state
            .keys()
            .iter()
            .map(|k| k.public_key().to_string())
            .collect(),
        api_version: API_VERSION,
        features: vec![
            "file_hash".into(),
            "checksum_headers".into(),
            DECLARE_FILES.into(),
        ],
    })
}

/// Presigns a single PUT of `key`; with `checksum` (SHA-256) it signs
/// `x-amz-checksum-sha256`, so the storage refuses other bytes.
pub(super) async fn presign_single(
    state: &AppState,
    key: &str,
    kind: ObjectType,
    checksum: Option<[u8; 32]>,
) -> Result<PendingObject, ApiError> {
    let presigned = state
        .storage()
        .presign_put(
            key,
            state.presign_ttl(),
            &PutPresign {
                checksum_sha256: checksum,
                ..PutPresign::default()
            },
        )
        .await?;
    Ok(PendingObject {
        kind,
        presigned_url: Some(presigned.url),
        multipart_info: None,
        headers: presigned.headers.into_iter().collect(),
    })
}

pub(super) async fn presign_parts(
    state: &AppState,
    key: &str,
    upload_id: &str,
    parts: std::ops::RangeInclusive<i64>,
    ttl: Duration,
) -> Result<Vec<String>, ApiError> {
    let mut urls = Vec::new();
    for part in parts {
        let number = u32::try_from(part)
            .map_err(|_| ApiError::BadRequest(format!("part number {part} out of range")))?;
        urls.push(
            state
                .storage()
                .presign_part(key, upload_id, number, ttl)
                .await?,
        );
    }
    Ok(urls)
}

async fn sign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SignResponse>, ApiError> {
    state.authorize(&headers, Scope::Push)?;
    let id = session_id(&id)?;
    let request: SignRequest = json(&body)?;
    let narinfos = pending_sign::declared_narinfos(state.db(), id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pending closure {id}")))?;
    let mut signatures = BTreeMap::new();
    for (key, fields) in &request.narinfos {
        let declared = narinfos.get(key).ok_or_else(|| {
            ApiError::Forbidden(format!(
                "{} is not a pending narinfo of closure {id}",
                crate::nix::preview(key)
            ))
        })?;
        let fingerprint = fingerprint(key, fields, declared)?;
        let sigs = state
            .keys()
            .iter()
            .map(|k| k.sign(&fingerprint).to_string())
            .collect();
        signatures.insert(key.clone(), sigs);
    }
    Ok(Json(SignResponse { signatures }))
}

/// The fingerprint of a narinfo, after checking it describes the path its key names,
/// references only paths whose narinfos it `declared` (sorted) and points its URL at an
/// object it declared (else GC, which follows the declaration, could delete what a signed
/// narinfo promises).
fn fingerprint(key: &str, fields: &NarinfoFields, declared: &[String]) -> Result<String, ApiError> {
    let bad = |what: String| ApiError::BadRequest(format!("{}: {what}", crate::nix::preview(key)));
    let path = StorePath::parse(&fields.store_path).map_err(|e| bad(e.to_string()))?;
    if key != format!("{}.narinfo", path.hash_part()) {
        return Err(ApiError::Forbidden(format!(
            "{} does not describe {}",
            crate::nix::preview(key),
            path
        )));
    }
    let nar_hash = NixHash::parse(&fields.nar_hash).map_err(|e| bad(format!("nar_hash: {e}")))?;
    let references = fields
        .references
        .iter()
        .map(|r| StorePath::parse(r))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("references: {e}")))?;
    if let Some(undeclared) = references
        .iter()
        // A path referring to itself needs no declaration: it is this very narinfo.
        .filter(|r| **r != path)
        .find(|r| {
            declared
                .binary_search(&format!("{}.narinfo", r.hash_part()))
                .is_err()
        })
    {
        return Err(ApiError::Forbidden(format!(
            "{} references {undeclared}, but its pending closure did not declare that \
             reference; declare every reference when starting the session",
            crate::nix::preview(key)
        )));
    }
    // The URL is not signed, but GC keeps a narinfo's NAR alive only through the
    // declaration: a URL to any other object could be collected under a signed narinfo.
    if let Some(url) = fields.url.as_deref() {
        if declared.binary_search_by(|k| k.as_str().cmp(url)).is_err() {
            return Err(ApiError::Forbidden(format!(
                "{} has URL {}, but its pending closure did not declare that object as a \
                 reference of it; list the NAR among the narinfo's refs when starting the \
                 session",
                crate::nix::preview(key),
                crate::nix::preview(url)
            )));
        }
    }
    Ok(crate::nix::signature::fingerprint(
        &path,
        &nar_hash,
        fields.nar_size,
        &references,
    ))
}

async fn complete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = state.authorize(&headers, Scope::Push)?.to_owned();
    let id = session_id(&id)?;
    let Some(objects) = pending::objects(state.db(), id).await? else {
        return completed_before(&state, id).await;
    };
    // Commit nothing the bucket lacks: a root must never point at a missing object.
    let storage = state.storage();
    let checks: Vec<_> = objects
        .iter()
        .filter(|o| o.needs_upload)
        .map(|o| async move {
            let meta = storage.head(&o.key).await?;
            Ok::<_, ApiError>(meta.is_none().then(|| o.key.clone()))
        })
        .collect();
    let missing: Vec<String> = futures::stream::iter(checks)
        .buffer_unordered(STORAGE_CONCURRENCY)
        .try_filter_map(|k| async move { Ok(k) })
        .try_collect()
        .await?;
    if !missing.is_empty() {
        let shown: Vec<&str> = missing.iter().take(5).map(String::as_str).collect();
        return Err(ApiError::BadRequest(format!(
            "{} object(s) were not uploaded, e.g. {}",
            missing.len(),
            shown.join(", ")
        )));
    }
    let Some(committed) = pending::complete(state.db(), id, now_ms()).await? else {
        // Another request committed it meanwhile.
        return completed_before(&state, id).await;
    };
    // The commit stands either way; an upload that cannot be aborted only costs storage
    // until the bucket's lifecycle rule removes it (abort_all logs each).
    storage
        .abort_all(&committed.abandoned_uploads, STORAGE_CONCURRENCY)
        .await;
    tracing::info!(
        token = %token,
        session = id,
        objects = objects.len(),
        uploaded = objects.iter().filter(|o| o.needs_upload).count(),
        "push committed"
    );
    Ok(StatusCode::NO_CONTENT)
}

/// A commit of a session that is gone: 204 if that session committed (the client
/// retries because the first answer was lost), else 404.
async fn completed_before(state: &AppState, id: i64) -> Result<StatusCode, ApiError> {
    if pending::was_committed(state.db(), id).await? {
        return Ok(StatusCode::NO_CONTENT);
    }
    Err(ApiError::NotFound(format!("no pending closure {id}")))
}

#[derive(Debug, serde::Deserialize)]
struct CleanupQuery {
    #[serde(rename = "older-than")]
    older_than: Option<String>,
}

/// Parses a Go-style duration (`1h`, `30m`, `720h`, `1h30m`).
pub fn parse_duration(raw: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(raw).map_err(|e| {
        ApiError::BadRequest(format!(
            "invalid duration {}: {e}",
            crate::nix::preview(raw)
        ))
    })
}

async fn cleanup(
    State(state): State<AppState>,
    Query(query): Query<CleanupQuery>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = state.authorize(&headers, Scope::Admin)?.to_owned();
    let older_than = parse_duration(query.older_than.as_deref().unwrap_or("1h"))?;
    let cutoff = now_ms() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX / 2);
    let (sessions, uploads) = pending::delete_started_before(state.db(), cutoff, now_ms()).await?;
    tracing::info!(
        token = %token,
        older_than = %humantime::format_duration(older_than),
        sessions,
        "stale upload sessions deleted"
    );
    // The sessions are gone whatever happens now: try every upload, not up to the first
    // that fails, which would leave the rest open with nothing left to find them by.
    let failed = state
        .storage()
        .abort_all(&uploads, STORAGE_CONCURRENCY)
        .await;
    if let Some((key, first)) = failed.first() {
        return Err(ApiError::Internal(format!(
            "{} of {} multipart uploads could not be aborted and are left to the \
             bucket's lifecycle rule; the first, of {key}: {first}",
            failed.len(),
            uploads.len()
        )));
    }
    Ok(StatusCode::NO_CONTENT)
}

fn nar_key(raw: &str) -> Result<(), ApiError> {
    ObjectKey::parse_as(raw, ObjectType::Nar)
        .map(|_| ())
        .map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Checks that `upload_id` is an open multipart upload of the NAR `key` (400 / 404).
async fn open_multipart(state: &AppState, key: &str, upload_id: &str) -> Result<(), ApiError> {
    nar_key(key)?;
    if pending::multipart_exists(state.db(), upload_id, key).await? {
        return Ok(());
    }
    Err(ApiError::NotFound(format!(
        "no open multipart upload {} of {key}",
        crate::nix::preview(upload_id)
    )))
}

async fn request_parts(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<RequestPartsResponse>, ApiError> {
    state.authorize(&headers, Scope::Push)?;
    let request: RequestPartsRequest = json(&body)?;
    open_multipart(&state, &request.object_key, &request.upload_id).await?;
    let range = plan::part_range(request.start_part_number, request.num_parts)?;
    let start = *range.start();
    let part_urls = presign_parts(
        &state,
        &request.object_key,
        &request.upload_id,
        range,
        state.presign_ttl(),
    )
    .await?;
    Ok(Json(RequestPartsResponse {
        part_urls,
        start_part_number: start,
    }))
}

async fn complete_multipart(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    state.authorize(&headers, Scope::Push)?;
    let request: CompleteMultipartRequest = json(&body)?;
    open_multipart(&state, &request.object_key, &request.upload_id).await?;
    let mut parts = request
        .parts
        .iter()
        .map(|p| {
            let number = u32::try_from(p.part_number)
                .ok()
                .filter(|n| (1..=crate::storage::MAX_PART_NUMBER).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("part number {} out of range", p.part_number))
                })?;
            Ok(CompletedPart {
                part_number: number,
                etag: p.etag.clone(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    if parts.is_empty() {
        return Err(ApiError::BadRequest("no parts to complete".into()));
    }
    parts.sort_by_key(|p| p.part_number);
    state
        .storage()
        .complete_multipart(&request.object_key, &request.upload_id, &parts)
        .await?;
    // The object is whole: other uploads of the same key are now pointless.
    for other in pending::take_multiparts_of_key(state.db(), &request.object_key).await? {
        if other != request.upload_id {
            state
                .storage()
                .abort_multipart(&request.object_key, &other)
                .await?;
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn head_object(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.authorize(&headers, Scope::Push)?;
    ObjectKey::parse(&key).map_err(|e| ApiError::BadRequest(e.to_string()))?;
    match state.storage().head(&key).await? {
        Some(_) => Ok(StatusCode::NO_CONTENT),
        None => Err(ApiError::NotFound(format!("{key} is not in the cache"))),
    }
}
