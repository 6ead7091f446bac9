//! Request headers the read proxy understands, and the ones it answers with.

use std::time::SystemTime;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use base64::Engine;

use crate::storage::Conditions;

/// The request's credentials as a bearer header: Nix sends netrc entries as Basic
/// auth, so the password (or, failing that, the user name) of Basic is the token.
pub fn read_authorization(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return out;
    };
    let bearer = match value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    {
        Some(encoded) => base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .ok()
            .and_then(|raw| String::from_utf8(raw).ok())
            .map(|pair| match pair.split_once(':') {
                Some((_, pass)) if !pass.is_empty() => pass.to_string(),
                Some((user, _)) => user.to_string(),
                None => pair,
            })
            .map(|token| format!("Bearer {token}")),
        None => Some(value.to_string()),
    };
    if let Some(v) = bearer.and_then(|b| HeaderValue::from_str(&b).ok()) {
        out.insert(header::AUTHORIZATION, v);
    }
    out
}

/// `If-None-Match` / `If-Modified-Since` of a request.
pub fn conditions(headers: &HeaderMap) -> Conditions {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    Conditions {
        if_none_match: text(header::IF_NONE_MATCH).map(str::to_string),
        if_modified_since: text(header::IF_MODIFIED_SINCE)
            .and_then(|v| httpdate::parse_http_date(v).ok()),
    }
}

/// Sets a header when the value is valid (stored metadata could be anything).
pub fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// An HTTP date.
pub fn http_date(time: SystemTime) -> String {
    httpdate::fmt_http_date(time)
}
