//! The read proxy's GETs without the SDK: a URL presigned by [`QuickPresigner`] and a
//! plain keep-alive HTTP client. The SDK's request pipeline costs more per request than a
//! loopback or in-region S3 takes to answer a narinfo; this path costs a signature
//! (cached signing key) and one HTTP exchange.

use std::time::{Duration, SystemTime};

use futures::TryStreamExt;
use reqwest::header::{self, HeaderMap};
use reqwest::StatusCode;

use super::range::ContentRange;
use super::s3_error::{classify, error_of, retry_after};
use super::s3_presign::QuickPresigner;
use super::{ByteRange, Conditions, GetObject, Result, StorageError};
use crate::report::error_chain;

/// Lifetime of the URLs signed for the worker's own GETs (used at once).
const GET_URL_TTL: Duration = Duration::from_secs(300);
/// Most bytes of an error answer read to find its S3 error code.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// GETs `full_key` (the store's prefix included) the way [`super::S3Store::get`] promises:
/// a range, conditions evaluated by S3, errors classified as the SDK path does. `key` is
/// the caller's key, for errors.
pub(crate) async fn get(
    http: &reqwest::Client,
    quick: &QuickPresigner,
    full_key: &str,
    key: &str,
    range: Option<ByteRange>,
    conditions: &Conditions,
) -> Result<GetObject> {
    const OP: &str = "get";
    let url = quick
        .presign(
            "GET",
            full_key,
            &[("x-id", "GetObject")],
            &[],
            GET_URL_TTL,
            SystemTime::now(),
        )
        .await
        .map_err(|e| StorageError::other(OP, key, e))?;
    let mut request = http.get(url);
    // Unsigned headers are allowed beside a presigned query (only x-amz-* must be signed).
    if let Some(range) = range {
        request = request.header(header::RANGE, range.to_string());
    }
    if let Some(tags) = &conditions.if_none_match {
        request = request.header(header::IF_NONE_MATCH, tags);
    }
    if let Some(since) = conditions.if_modified_since {
        request = request.header(header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(since));
    }
    let response = request
        .send()
        .await
        .map_err(|e| StorageError::other(OP, key, error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failure(OP, key, response).await);
    }
    let headers = response.headers();
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| StorageError::other(OP, key, "answer without Content-Length"))?;
    let content_range = if status == StatusCode::PARTIAL_CONTENT {
        Some(
            text(headers, header::CONTENT_RANGE)
                .as_deref()
                .and_then(ContentRange::parse)
                .ok_or_else(|| {
                    StorageError::other(OP, key, "ranged answer without Content-Range")
                })?,
        )
    } else {
        None
    };
    let object = GetObject {
        size,
        total_size: content_range.map_or(size, |r| r.total),
        content_range,
        etag: text(headers, header::ETAG),
        last_modified: text(headers, header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(&v).ok()),
        content_type: text(headers, header::CONTENT_TYPE),
        content_encoding: text(headers, header::CONTENT_ENCODING),
        cache_control: text(headers, header::CACHE_CONTROL),
        body: Box::pin(futures::stream::empty()),
    };
    let owned = key.to_string();
    Ok(GetObject {
        body: Box::pin(
            response
                .bytes_stream()
                .map_err(move |e| StorageError::other(OP, owned.clone(), error_chain(&e))),
        ),
        ..object
    })
}

fn text(headers: &HeaderMap, name: header::HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The [`StorageError`] of a non-2xx answer, classified by status and S3 error code.
async fn failure(op: &'static str, key: &str, response: reqwest::Response) -> StorageError {
    let status = response.status().as_u16();
    let wait = retry_after(
        response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    );
    let object_size = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes */"))
        .and_then(|v| v.parse::<u64>().ok());
    // 304 and HEAD-like answers have no body; errors carry a small XML document.
    let body = if status == 304 {
        String::new()
    } else {
        read_prefix(response, MAX_ERROR_BODY).await
    };
    let code = xml_element(&body, "Code");
    error_of(
        classify(Some(status), code),
        op,
        key,
        wait,
        object_size,
        || {
            format!(
                "S3 answered {status}{}{}",
                code.map(|c| format!(" {c}")).unwrap_or_default(),
                xml_element(&body, "Message")
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        },
    )
}

/// At most `max` bytes of a body, lossily as text (an error document, for its code).
async fn read_prefix(response: reqwest::Response, max: usize) -> String {
    let mut body = Vec::new();
    let mut stream = response.bytes_stream();
    while let Ok(Some(chunk)) = stream.try_next().await {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The text of the first `<name>…</name>` in an S3 error document.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_error_documents_give_their_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                   <Message>The specified key does not exist.</Message></Error>";
        assert_eq!(xml_element(xml, "Code"), Some("NoSuchKey"));
        assert_eq!(
            xml_element(xml, "Message"),
            Some("The specified key does not exist.")
        );
        assert_eq!(xml_element(xml, "Resource"), None);
        assert_eq!(xml_element("<Code>unterminated", "Code"), None);
        assert_eq!(xml_element("", "Code"), None);
    }
}
