//! Evaluating conditional GET headers against an object (RFC 9110 §13.2.2), for
//! backends that do not do it themselves.

use std::time::{SystemTime, UNIX_EPOCH};

use super::Conditions;

/// True when the client's copy is current and the answer is 304 Not Modified.
pub fn not_modified(
    conditions: &Conditions,
    etag: Option<&str>,
    last_modified: Option<SystemTime>,
) -> bool {
    if let Some(if_none_match) = &conditions.if_none_match {
        // If-None-Match wins; If-Modified-Since is then ignored.
        return etag_matches(if_none_match, etag);
    }
    match (conditions.if_modified_since, last_modified) {
        // HTTP dates have one-second precision.
        (Some(since), Some(modified)) => unix_secs(modified) <= unix_secs(since),
        _ => false,
    }
}

/// Weak comparison of an `If-None-Match` list against the object's entity tag.
fn etag_matches(list: &str, etag: Option<&str>) -> bool {
    let Some(etag) = etag else { return false };
    let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
    let ours = opaque(etag);
    list.split(',')
        .map(str::trim)
        .any(|tag| tag == "*" || opaque(tag) == ours)
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn if_none_match_compares_weakly_and_wins() {
        let c = |tag: &str, since| Conditions {
            if_none_match: Some(tag.to_string()),
            if_modified_since: since,
        };
        assert!(not_modified(&c("\"a\"", None), Some("\"a\""), None));
        assert!(not_modified(&c("W/\"a\"", None), Some("\"a\""), None));
        assert!(not_modified(&c("\"x\", \"a\"", None), Some("\"a\""), None));
        assert!(not_modified(&c("*", None), Some("\"a\""), None));
        assert!(!not_modified(
            &c("\"b\"", Some(at(100))),
            Some("\"a\""),
            Some(at(50))
        ));
    }

    #[test]
    fn if_modified_since_uses_whole_seconds() {
        let c = Conditions {
            if_none_match: None,
            if_modified_since: Some(at(100)),
        };
        let modified = at(100) + Duration::from_millis(700);
        assert!(not_modified(&c, None, Some(modified)));
        assert!(!not_modified(&c, None, Some(at(101))));
        assert!(!not_modified(&Conditions::default(), None, Some(at(1))));
    }
}
