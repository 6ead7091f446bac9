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

/// `If-None-Match` / `If-Modified-Since` of a request, as RFC 9110 §13.2.2 evaluates
/// them, in a form storage that does not follow the RFC (S3) still evaluates right.
pub fn conditions(headers: &HeaderMap) -> Conditions {
    let text = |name: HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
    // If-None-Match compares weakly; S3 compares strongly, so a tag that a compressing
    // proxy in front made weak would never match there: the `W/` goes.
    let if_none_match = text(header::IF_NONE_MATCH).map(strip_weak_prefixes);
    // If-Modified-Since is ignored when If-None-Match is present; AWS S3 documents a 304
    // for a differing tag with a matching date, so the date is not passed on at all.
    let if_modified_since = match if_none_match {
        Some(_) => None,
        None => text(header::IF_MODIFIED_SINCE).and_then(|v| httpdate::parse_http_date(v).ok()),
    };
    Conditions {
        if_none_match,
        if_modified_since,
    }
}

/// The validator of an `If-Range` header (RFC 9110 §13.1.5): the Range it comes with is
/// served only while the object still has this validator; otherwise the whole object is,
/// so a download resumed across a change never splices two versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfRange {
    /// A strong entity tag, quotes included.
    Tag(String),
    /// An HTTP date, to equal `Last-Modified` to the second.
    Date(SystemTime),
    /// A weak tag or a value that is neither tag nor date: it never matches (§13.1.5 asks
    /// for the strong comparison), so the whole object is sent.
    Never,
}

impl IfRange {
    /// The request's `If-Range`, when it has one.
    pub fn of(headers: &HeaderMap) -> Option<IfRange> {
        let value = headers.get(header::IF_RANGE)?;
        let Ok(value) = value.to_str().map(str::trim) else {
            return Some(IfRange::Never);
        };
        if value.len() >= 2 && value.starts_with('"') && value.ends_with('"') {
            return Some(IfRange::Tag(value.to_string()));
        }
        Some(
            httpdate::parse_http_date(value)
                .map(IfRange::Date)
                .unwrap_or(IfRange::Never),
        )
    }

    /// True when the object with these validators is the one the client holds part of.
    pub fn matches(&self, etag: Option<&str>, last_modified: Option<SystemTime>) -> bool {
        match (self, etag, last_modified) {
            // Strong comparison: a weak tag of ours (`W/"…"`) never equals a quoted tag.
            (IfRange::Tag(tag), Some(etag), _) => tag == etag.trim(),
            // Last-Modified is sent to the second; "exactly matches" is the same second.
            (IfRange::Date(date), _, Some(modified)) => {
                unix_secs(*date).is_some_and(|secs| unix_secs(modified) == Some(secs))
            }
            _ => false,
        }
    }
}

fn unix_secs(time: SystemTime) -> Option<u64> {
    time.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs())
}

/// An entity-tag list with every `W/` before a tag removed (a `W/` inside a quoted tag
/// is part of the tag and stays).
fn strip_weak_prefixes(list: &str) -> String {
    let mut out = String::with_capacity(list.len());
    let mut quoted = false;
    let mut rest = list;
    while let Some(c) = rest.chars().next() {
        if !quoted && rest.starts_with("W/\"") {
            rest = &rest[2..];
            continue;
        }
        if c == '"' {
            quoted = !quoted;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(name.clone(), HeaderValue::from_str(value).unwrap());
        }
        h
    }

    #[test]
    fn weak_tags_are_compared_by_their_opaque_part() {
        let c = conditions(&headers(&[(header::IF_NONE_MATCH, r#"W/"a", "b",W/"c""#)]));
        assert_eq!(c.if_none_match.as_deref(), Some(r#""a", "b","c""#));
        // `W/` is a legal opaque tag; only a prefix before a quote is weakness.
        let odd = conditions(&headers(&[(header::IF_NONE_MATCH, r#""W/", W/"x""#)]));
        assert_eq!(odd.if_none_match.as_deref(), Some(r#""W/", "x""#));
        let star = conditions(&headers(&[(header::IF_NONE_MATCH, "*")]));
        assert_eq!(star.if_none_match.as_deref(), Some("*"));
    }

    #[test]
    fn if_range_compares_tags_strongly_and_dates_to_the_second() {
        let modified = httpdate::parse_http_date("Sun, 22 Nov 2026 05:00:00 GMT").unwrap();
        let later = modified + std::time::Duration::from_millis(400);
        let etag = Some(r#""abc""#);
        let if_range = |v: &str| IfRange::of(&headers(&[(header::IF_RANGE, v)])).unwrap();
        assert_eq!(IfRange::of(&HeaderMap::new()), None);

        assert!(if_range(r#""abc""#).matches(etag, None));
        assert!(if_range(r#" "abc" "#).matches(etag, None));
        assert!(!if_range(r#""abd""#).matches(etag, Some(modified)));
        // Weak tags never match, whoever made them weak.
        assert!(!if_range(r#"W/"abc""#).matches(etag, None));
        assert!(!if_range(r#""abc""#).matches(Some(r#"W/"abc""#), None));
        assert!(!if_range(r#""abc""#).matches(None, Some(modified)));

        let date = "Sun, 22 Nov 2026 05:00:00 GMT";
        assert!(if_range(date).matches(etag, Some(later)));
        assert!(!if_range(date).matches(etag, Some(modified + std::time::Duration::from_secs(1))));
        assert!(!if_range(date).matches(etag, None));
        assert!(!if_range("Sun, 22 Nov 2026 04:59:59 GMT").matches(None, Some(modified)));
        // Neither a tag nor a date: the Range is not served.
        assert_eq!(if_range("abc"), IfRange::Never);
        assert!(!if_range("abc").matches(Some("abc"), Some(modified)));
    }

    #[test]
    fn if_modified_since_is_dropped_when_if_none_match_is_present() {
        let date = "Sun, 22 Nov 2026 05:00:00 GMT";
        let alone = conditions(&headers(&[(header::IF_MODIFIED_SINCE, date)]));
        assert!(alone.if_modified_since.is_some());
        let both = conditions(&headers(&[
            (header::IF_MODIFIED_SINCE, date),
            (header::IF_NONE_MATCH, r#""a""#),
        ]));
        assert_eq!(both.if_none_match.as_deref(), Some(r#""a""#));
        assert_eq!(both.if_modified_since, None);
    }
}
