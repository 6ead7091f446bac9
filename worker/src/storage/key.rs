//! Object key rules shared by both backends, and the S3 key prefix.

use super::StorageError;

/// Longest key accepted: the same limit object keys have.
const MAX_KEY_LEN: usize = crate::nix::object_key::MAX_KEY_LEN;

/// Checks that `key` is a relative, `/`-separated path that cannot escape a root.
///
/// Refused: empty keys or components, absolute keys, `.` and `..` components,
/// NUL and other control characters, backslashes, and components starting with `.`
/// (the local directory keeps temporary files and upload state under such names;
/// Nix object keys never start a component with a dot). `..` inside a name is fine.
pub fn validate_key(op: &'static str, key: &str) -> Result<(), StorageError> {
    let refuse = |reason: &str| Err(StorageError::invalid(op, key, reason));
    if key.is_empty() {
        return refuse("empty key");
    }
    if key.len() > MAX_KEY_LEN {
        return refuse("key too long");
    }
    if key.starts_with('/') {
        return refuse("absolute key");
    }
    if key.chars().any(|c| c.is_control() || c == '\\') {
        return refuse("control character or backslash in key");
    }
    for component in key.split('/') {
        if component.is_empty() {
            return refuse("empty path component");
        }
        if component.starts_with('.') {
            return refuse("path component starts with '.'");
        }
    }
    Ok(())
}

/// Checks a listing prefix: empty, or a key-like string (a trailing `/` is allowed).
pub fn validate_prefix(op: &'static str, prefix: &str) -> Result<(), StorageError> {
    match prefix.strip_suffix('/') {
        _ if prefix.is_empty() => Ok(()),
        Some(dir) => validate_key(op, dir),
        None => validate_key(op, prefix),
    }
}

/// Normalises a configured key prefix: no leading or doubled slashes, one trailing slash.
pub fn normalize_prefix(prefix: &str) -> String {
    let parts: Vec<&str> = prefix.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("{}/", parts.join("/"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_nix_keys() {
        for key in [
            "0123456789abcdfghijklmnpqrsvwxyz.narinfo",
            "nar/0123456789abcdfghijklmnpqrsvwxyz0123456789abcdfghij.nar.zst",
            "log/hm_..zlogout.drv",
            "realisations/sha256:abc!out.doi",
            "nix-cache-info",
        ] {
            assert!(validate_key("test", key).is_ok(), "{key}");
        }
    }

    #[test]
    fn refuses_escapes() {
        for key in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a/./b",
            "a//b",
            "a/",
            ".hidden",
            "a/.tmp-1",
            "a\0b",
            "a\\..\\b",
            "..",
        ] {
            assert!(validate_key("test", key).is_err(), "{key:?}");
        }
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("cache"), "cache/");
        assert_eq!(normalize_prefix("/cache//a/"), "cache/a/");
    }
}
