//! HEADs without the SDK, like the read proxy's GETs ([`super::s3_get`]): a commit checks
//! every uploaded object with one, and a HEAD through the proxy asks for one.

use hyper::header;
use hyper::{Method, StatusCode};

use super::s3_get::{failure, presigned, text};
use super::s3_http::GetClient;
use super::s3_presign::QuickPresigner;
use super::{ObjectMeta, Result, StorageError};
use crate::report::error_chain;

/// HEADs `full_key` (the store's prefix included) the way [`super::S3Store::head`]
/// promises: `None` when absent, errors classified as the SDK path does. `key` is the
/// caller's key, for errors.
pub(crate) async fn head(
    http: &GetClient,
    quick: &QuickPresigner,
    full_key: &str,
    key: &str,
) -> Result<Option<ObjectMeta>> {
    const OP: &str = "head";
    let request = presigned(quick, Method::HEAD, "HeadObject", full_key, OP, key).await?;
    let response = http
        .send(request)
        .await
        .map_err(|e| StorageError::other(OP, key, error_chain(&e)))?;
    match response.status() {
        StatusCode::NOT_FOUND => return Ok(None),
        status if !status.is_success() => return Err(failure(OP, key, response).await),
        _ => {}
    }
    let headers = response.headers();
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| StorageError::other(OP, key, "answer without Content-Length"))?;
    Ok(Some(ObjectMeta {
        size,
        etag: text(headers, header::ETAG),
        last_modified: text(headers, header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(&v).ok()),
        content_type: text(headers, header::CONTENT_TYPE),
        content_encoding: text(headers, header::CONTENT_ENCODING),
    }))
}
