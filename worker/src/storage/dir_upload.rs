//! Receiving uploads to the local directory through its signed URLs, and the axum
//! routes (`PUT /upload/{key}`) the worker mounts under `/_storage`.

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::put;
use axum::Router;
use base64::Engine;
use futures::TryStreamExt;

use super::dir::{unix_now, DirStore};
use super::key::validate_key;
use super::presign::{UploadParams, UrlRejected};
use super::{ByteStream, PutOptions, Result, StorageError};

impl DirStore {
    /// Checks an upload URL's signature (constant time) and expiry for `key`.
    pub fn verify_upload_url(&self, key: &str, params: &UploadParams) -> Result<()> {
        const OP: &str = "upload";
        validate_key(OP, key)?;
        self.inner
            .signer
            .verify(key, params, unix_now())
            .map_err(|rejected| StorageError::Forbidden {
                op: OP,
                key: key.to_string(),
                reason: match rejected {
                    UrlRejected::BadSignature => "bad signature",
                    UrlRejected::Expired => "expired",
                },
            })
    }

    /// Verifies the URL, then streams `body` to disk while hashing it: a single object,
    /// or a part when the URL names an upload. Bytes whose SHA-256 differs from the
    /// signed one (or from `options.checksum_sha256`, the uploader's header) are refused
    /// and leave nothing behind. Returns the ETag.
    pub async fn accept_upload(
        &self,
        key: &str,
        params: &UploadParams,
        options: &PutOptions,
        body: ByteStream,
    ) -> Result<String> {
        const OP: &str = "upload";
        self.verify_upload_url(key, params)?;
        let signed = match &params.sha256 {
            None => None,
            Some(hex) => Some(parse_sha256(hex).ok_or_else(|| {
                StorageError::invalid(OP, key, "sha256 parameter is not 64 hex digits")
            })?),
        };
        if let (Some(signed), Some(sent)) = (signed, options.checksum_sha256) {
            if signed != sent {
                return Err(StorageError::ChecksumMismatch {
                    op: OP,
                    key: key.to_string(),
                });
            }
        }
        let checksum = signed.or(options.checksum_sha256);
        match (&params.upload_id, params.part) {
            (Some(upload_id), Some(part)) => {
                self.put_part(key, upload_id, part, body, checksum).await
            }
            (None, None) => {
                let options = PutOptions {
                    checksum_sha256: checksum,
                    ..options.clone()
                };
                self.write_object(OP, key, body, None, &options).await
            }
            _ => Err(StorageError::invalid(
                OP,
                key,
                "upload_id and part go together",
            )),
        }
    }
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    hex::decode(hex).ok()?.try_into().ok()
}

/// Routes for uploads to `store`; mount under `/_storage` (`PUT /_storage/upload/{key}`).
pub fn upload_router(store: DirStore) -> Router {
    Router::new()
        .route("/upload/{*key}", put(handle_put))
        // Objects are NARs of any size; the stream goes to disk, never into memory.
        .layer(DefaultBodyLimit::disable())
        .with_state(store)
}

async fn handle_put(
    State(store): State<DirStore>,
    Path(key): Path<String>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let options = match options_from(&headers) {
        Ok(options) => options,
        Err(reason) => return (StatusCode::BAD_REQUEST, reason).into_response(),
    };
    let owned_key = key.clone();
    let stream: ByteStream = Box::pin(
        body.into_data_stream()
            .map_err(move |e| StorageError::other("upload", &owned_key, e)),
    );
    match store.accept_upload(&key, &params, &options, stream).await {
        Ok(etag) => {
            let mut response = StatusCode::OK.into_response();
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response.headers_mut().insert(header::ETAG, value);
            }
            response
        }
        Err(e) => {
            let status =
                StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, e.to_string()).into_response()
        }
    }
}

/// Stored headers and the uploader's checksum header, as S3 would take them.
fn options_from(headers: &HeaderMap) -> Result<PutOptions, &'static str> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let checksum_sha256 = match headers.get("x-amz-checksum-sha256") {
        None => None,
        Some(value) => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(value.as_bytes())
                .map_err(|_| "x-amz-checksum-sha256 is not base64")?;
            Some(<[u8; 32]>::try_from(bytes).map_err(|_| "x-amz-checksum-sha256 is not 32 bytes")?)
        }
    };
    Ok(PutOptions {
        content_type: text("content-type"),
        content_encoding: text("content-encoding"),
        cache_control: text("cache-control"),
        checksum_sha256,
    })
}
