//! The signing key Secret: an Ed25519 key in Nix's `name:base64(seed ‖ public)` format.
//!
//! A generated key outlives its cache unless the spec says otherwise: losing it breaks every
//! client that trusts the cache, so by default the Secret carries no owner reference.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;

use super::{child_meta, labels, names, CacheView, Component};

/// Why a stored key cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    /// No `name:` prefix.
    #[error("expected name:base64, found no ':'")]
    NoName,
    /// Empty name.
    #[error("the key name before ':' is empty")]
    EmptyName,
    /// The part after `:` is not base64.
    #[error("the key is not valid base64: {0}")]
    Base64(String),
    /// Neither a 32-byte seed nor 64 bytes of seed and public key.
    #[error("the key has {0} bytes, expected 64 (seed and public key) or 32 (seed)")]
    Length(usize),
    /// The stored public half does not belong to the seed.
    #[error("the public half of the key does not match its seed")]
    Mismatch,
}

/// A Nix secret key for `key_name` from a 32-byte `seed`.
pub fn generate(key_name: &str, seed: [u8; 32]) -> String {
    let key = SigningKey::from_bytes(&seed);
    let mut bytes = Vec::with_capacity(64);
    bytes.extend_from_slice(&seed);
    bytes.extend_from_slice(&key.verifying_key().to_bytes());
    format!("{key_name}:{}", STANDARD.encode(bytes))
}

/// The public key (`name:base64(32 bytes)`) of a Nix secret key.
pub fn public_key(secret: &str) -> Result<String, KeyError> {
    let (name, encoded) = secret.trim().split_once(':').ok_or(KeyError::NoName)?;
    if name.is_empty() {
        return Err(KeyError::EmptyName);
    }
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    let seed: [u8; 32] = bytes
        .get(..32)
        .and_then(|s| s.try_into().ok())
        .ok_or(KeyError::Length(bytes.len()))?;
    let public = SigningKey::from_bytes(&seed).verifying_key().to_bytes();
    match bytes.len() {
        32 => {}
        64 if bytes[32..] == public => {}
        64 => return Err(KeyError::Mismatch),
        n => return Err(KeyError::Length(n)),
    }
    Ok(format!("{name}:{}", STANDARD.encode(public)))
}

/// The key name of a generated key: the URL's host plus `-1`, as Nix documentation suggests.
pub fn default_key_name(url: &str) -> String {
    let host = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    format!("{host}-1")
}

/// A Secret holding a freshly generated `key` under the spec's data key.
pub fn build(cache: &CacheView, key: &str) -> Secret {
    let owner = cache
        .spec
        .signing_key
        .delete_with_cache
        .then_some(&cache.owner);
    Secret {
        metadata: child_meta(
            names::signing_key_secret(cache.name, cache.spec),
            cache.namespace,
            labels(cache.name, Component::SigningKey),
            owner,
        ),
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            cache.spec.signing_key.key.clone(),
            ByteString(key.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn generated_key_round_trips_to_its_public_key() {
        let secret = generate("cache.example.org-1", [7; 32]);
        let (name, b64) = secret.split_once(':').unwrap();
        assert_eq!(name, "cache.example.org-1");
        assert_eq!(STANDARD.decode(b64).unwrap().len(), 64);
        let public = public_key(&secret).unwrap();
        let expected = SigningKey::from_bytes(&[7; 32]).verifying_key().to_bytes();
        assert_eq!(
            public,
            format!("cache.example.org-1:{}", STANDARD.encode(expected))
        );
    }

    #[test]
    fn a_bare_seed_is_accepted() {
        let seed_only = format!("k:{}", STANDARD.encode([9u8; 32]));
        assert_eq!(
            public_key(&seed_only).unwrap(),
            public_key(&generate("k", [9; 32])).unwrap()
        );
    }

    #[test]
    fn bad_keys_are_named() {
        assert_eq!(public_key("nocolon"), Err(KeyError::NoName));
        assert_eq!(public_key(":AAAA"), Err(KeyError::EmptyName));
        assert!(matches!(public_key("k:!!!"), Err(KeyError::Base64(_))));
        assert_eq!(
            public_key(&format!("k:{}", STANDARD.encode([1u8; 10]))),
            Err(KeyError::Length(10))
        );
        let mut bytes = vec![1u8; 64];
        bytes[63] ^= 1;
        assert_eq!(
            public_key(&format!("k:{}", STANDARD.encode(bytes))),
            Err(KeyError::Mismatch)
        );
    }

    #[test]
    fn key_name_comes_from_the_host() {
        assert_eq!(
            default_key_name("https://cache.example.org/x"),
            "cache.example.org-1"
        );
        assert_eq!(
            default_key_name("http://main.nix.svc:8080"),
            "main.nix.svc-1"
        );
    }

    #[test]
    fn generated_secret_is_kept_unless_asked() {
        let minimal = fixtures::minimal();
        let kept = build(&fixtures::view(&minimal, "http://x"), "k:abc");
        assert_eq!(kept.metadata.name.as_deref(), Some("main-signing-key"));
        assert_eq!(kept.metadata.owner_references, None);
        assert!(kept.data.unwrap().contains_key("secret-key"));
        let full = fixtures::full();
        let owned = build(&fixtures::view(&full, "http://x"), "k:abc");
        assert_eq!(owned.metadata.name.as_deref(), Some("cache-key"));
        assert_eq!(owned.metadata.owner_references.unwrap().len(), 1);
    }
}
