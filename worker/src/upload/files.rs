//! Larder's `POST /api/pending_closures/{id}/files`: a client that started its session
//! from `nix path-info` alone (so uploading can start while other paths are still
//! being compressed) declares each object's stored hash and size once it knows them,
//! and gets a presigned PUT carrying that hash as `x-amz-checksum-sha256`, so the
//! storage refuses any other bytes. `complete` commits the declared hash and size.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use futures::{StreamExt, TryStreamExt};

use crate::auth::Scope;
use crate::db::pending_files::{self, Declaration, FileDeclaration};
use crate::nix::{preview, NixHash, ObjectKey};
use crate::server::error::ApiError;
use crate::server::state::AppState;

use super::handlers::{json, presign_single, session_id};
use super::plan::{self, UploadPlan};
use super::wire::{DeclareFilesRequest, DeclareFilesResponse, PendingObject};

/// Most objects one declaration may name (a client declares a path's few at a time).
pub const MAX_FILES: usize = 1000;
/// URLs presigned at once.
const PRESIGN_CONCURRENCY: usize = 16;

/// SHA-256 digests of the declared files, by key.
pub type Digests = BTreeMap<String, [u8; 32]>;

/// Validates a declaration: known key shapes, `sha256` hashes, sizes that fit. Returns
/// the rows to record and the digests the presigned PUTs are bound to.
pub fn declarations(
    request: &DeclareFilesRequest,
) -> Result<(Vec<FileDeclaration>, Digests), ApiError> {
    if request.files.is_empty() {
        return Err(ApiError::BadRequest("no files declared".into()));
    }
    if request.files.len() > MAX_FILES {
        return Err(ApiError::BadRequest(format!(
            "{} files declared; at most {MAX_FILES} at once",
            request.files.len()
        )));
    }
    let mut digests = Digests::new();
    let files = request
        .files
        .iter()
        .map(|(key, file)| {
            let bad = |what: String| ApiError::BadRequest(format!("{}: {what}", preview(key)));
            ObjectKey::parse(key).map_err(|e| bad(e.to_string()))?;
            let hash =
                NixHash::parse(&file.file_hash).map_err(|e| bad(format!("file_hash: {e}")))?;
            let size = i64::try_from(file.file_size)
                .map_err(|_| bad("file_size too large".to_string()))?;
            digests.insert(key.clone(), *hash.digest());
            Ok(FileDeclaration {
                key: key.clone(),
                file_hash: hash.to_string(),
                file_size: size,
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok((files, digests))
}

/// Records the declared files and presigns their checksummed PUTs.
pub async fn declare(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<DeclareFilesResponse>, ApiError> {
    state.authorize(&headers, Scope::Push)?;
    let id = session_id(&id)?;
    let request: DeclareFilesRequest = json(&body)?;
    let (files, digests) = declarations(&request)?;
    let declared = match pending_files::declare(state.db(), id, &files).await? {
        Declaration::NoSession => {
            return Err(ApiError::NotFound(format!("no pending closure {id}")))
        }
        Declaration::NotPending(keys) => {
            let shown: Vec<String> = keys.iter().take(5).map(|k| preview(k)).collect();
            return Err(ApiError::Conflict(format!(
                "pending closure {id} does not wait for {} of the declared objects, e.g. {}",
                keys.len(),
                shown.join(", ")
            )));
        }
        Declaration::Recorded(declared) => declared,
    };
    let uploads: Vec<_> = declared
        .iter()
        .filter_map(|d| {
            let kind = plan::kind_from_code(d.kind)?;
            let nar_size = d.nar_size.and_then(|n| u64::try_from(n).ok());
            let checksum = digests.get(&d.key).copied();
            let state = &state;
            (plan::upload_plan(kind, nar_size) == UploadPlan::Single).then_some(async move {
                let object = presign_single(state, &d.key, kind, checksum).await?;
                Ok::<_, ApiError>((d.key.clone(), object))
            })
        })
        .collect();
    let pending_objects: Vec<(String, PendingObject)> = futures::stream::iter(uploads)
        .buffer_unordered(PRESIGN_CONCURRENCY)
        .try_collect()
        .await?;
    Ok(Json(DeclareFilesResponse {
        pending_objects: pending_objects.into_iter().collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::wire::FileInfo;

    fn request(entries: &[(&str, &str, u64)]) -> DeclareFilesRequest {
        DeclareFilesRequest {
            files: entries
                .iter()
                .map(|(k, h, s)| {
                    (
                        k.to_string(),
                        FileInfo {
                            file_hash: h.to_string(),
                            file_size: *s,
                        },
                    )
                })
                .collect(),
        }
    }

    #[test]
    fn declarations_are_validated_and_normalised() {
        let hash = NixHash::of(b"bytes");
        let nar = format!("nar/{}.nar.zst", hash.to_base32());
        let (ok, digests) = declarations(&request(&[(&nar, &hash.to_string(), 5)])).unwrap();
        assert_eq!(ok[0].file_hash, hash.to_string());
        assert_eq!(ok[0].file_size, 5);
        assert_eq!(digests[&nar], *hash.digest());

        let bad = [
            request(&[]),
            request(&[("../etc/passwd", &hash.to_string(), 5)]),
            request(&[(&nar, "sha256:nothex", 5)]),
            request(&[(&nar, &hash.to_string(), u64::MAX)]),
        ];
        for r in bad {
            assert!(
                matches!(declarations(&r), Err(ApiError::BadRequest(_))),
                "{r:?}"
            );
        }
        let many: Vec<(String, String, u64)> = (0..=MAX_FILES)
            .map(|i| (format!("{:032}.ls", i), hash.to_string(), 1))
            .collect();
        let many: Vec<(&str, &str, u64)> = many
            .iter()
            .map(|(k, h, s)| (k.as_str(), h.as_str(), *s))
            .collect();
        assert!(declarations(&request(&many)).is_err());
    }
}
