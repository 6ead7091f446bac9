//! Validation of a `BinaryCache` against the Secrets it references.

use std::collections::BTreeMap;

use kube::Resource;

use super::{SecretData, Secrets};
use crate::build::signing_key::{self, KeyError};
use crate::build::{checksum, ingress, names, service, CacheView};
use crate::crd::BinaryCache;

/// Settings that come from the operator rather than the resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defaults {
    /// Worker image when the spec names none.
    pub worker_image: String,
}

/// What is known about the signing key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SigningKeyState {
    /// The Secret holds a usable key with this public key.
    Existing {
        /// `name:base64` public key.
        public_key: String,
    },
    /// The Secret does not exist; generate a key with this name.
    Generate {
        /// Name part of the key to generate.
        key_name: String,
    },
}

/// A cache that passed validation; only [`validate`] makes one.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidCache<'a> {
    /// What the builders read.
    pub view: CacheView<'a>,
    /// The image workers should run.
    pub image: String,
    /// The signing key's state.
    pub signing_key: SigningKeyState,
    /// Every Secret the pods read, for the rollout checksum.
    pub pod_secrets: BTreeMap<String, SecretData>,
    /// Identifies the database (a short hash of its URL), so migration reruns when it changes.
    pub database_checksum: String,
}

/// Why a cache cannot be reconciled; each becomes a condition reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidCache {
    /// Name, namespace or uid missing (never from the API server).
    #[error("metadata.{0} is missing")]
    Metadata(&'static str),
    /// A referenced Secret does not exist.
    #[error("Secret {secret} ({purpose}) not found")]
    SecretNotFound {
        /// The Secret's name.
        secret: String,
        /// What it is for.
        purpose: &'static str,
    },
    /// A referenced Secret lacks the key.
    #[error("Secret {secret} ({purpose}) has no key {key:?}")]
    SecretKeyMissing {
        /// The Secret's name.
        secret: String,
        /// The missing key.
        key: String,
        /// What it is for.
        purpose: &'static str,
    },
    /// The signing key Secret holds something that is not a Nix secret key.
    #[error("Secret {secret} does not hold a Nix signing key: {source}")]
    SigningKey {
        /// The Secret's name.
        secret: String,
        /// What is wrong with the key.
        source: KeyError,
    },
    /// The token file in the push tokens Secret would be refused by the worker.
    #[error("Secret {secret} key {key:?} is not a token file the worker accepts: {source}")]
    TokenFile {
        /// The Secret's name.
        secret: String,
        /// The key holding the file.
        key: String,
        /// What is wrong, by line.
        source: super::token_file::TokenFileError,
    },
    /// A field has a value the schema let through but the operator cannot use.
    #[error("spec.{field}: {message}")]
    Field {
        /// Path below `spec`.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl InvalidCache {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Metadata(_) => "MissingMetadata",
            Self::SecretNotFound { .. } => "SecretNotFound",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::SigningKey { .. } => "InvalidSigningKey",
            Self::TokenFile { .. } => "InvalidTokenFile",
            Self::Field { .. } => "InvalidSpec",
        }
    }

    /// Whether the problem may go away without a spec change (a Secret appearing), so the
    /// controller should look again after a while.
    pub fn waits_on_other_objects(&self) -> bool {
        matches!(
            self,
            Self::SecretNotFound { .. }
                | Self::SecretKeyMissing { .. }
                | Self::SigningKey { .. }
                | Self::TokenFile { .. }
        )
    }
}

/// Names of every Secret the cache references, for the fetch step.
pub fn referenced_secrets(cache: &BinaryCache) -> Vec<String> {
    let name = cache.metadata.name.as_deref().unwrap_or_default();
    let spec = &cache.spec;
    let mut out = vec![
        spec.database.url_secret.name.clone(),
        names::signing_key_secret(name, spec),
    ];
    if let Some(tokens) = &spec.push_tokens {
        out.push(tokens.secret_name.clone());
    }
    if let Some(s3) = spec
        .storage
        .credentials
        .as_ref()
        .and_then(|c| c.secret.as_ref())
    {
        out.push(s3.name.clone());
    }
    out.sort();
    out.dedup();
    out
}

/// Checks `cache` against the fetched `secrets`.
pub fn validate<'a>(
    cache: &'a BinaryCache,
    secrets: &Secrets,
    defaults: &Defaults,
) -> Result<ValidCache<'a>, InvalidCache> {
    let name = cache
        .metadata
        .name
        .as_deref()
        .ok_or(InvalidCache::Metadata("name"))?;
    let namespace = cache
        .metadata
        .namespace
        .as_deref()
        .ok_or(InvalidCache::Metadata("namespace"))?;
    let owner = cache
        .controller_owner_ref(&())
        .ok_or(InvalidCache::Metadata("uid"))?;
    let spec = &cache.spec;
    check_fields(cache)?;

    let url = match (&spec.url, &spec.ingress) {
        (Some(url), _) => url.clone(),
        (None, Some(ing)) => ingress::url(ing),
        (None, None) => service::cluster_url(name, namespace, spec.service.port),
    };

    let mut pod_secrets = BTreeMap::new();
    let db = &spec.database.url_secret;
    let database_url = require_key(secrets, &db.name, &db.key, "database URL")?;
    let database_checksum = checksum::short(&[&String::from_utf8_lossy(database_url)], 16);
    pod_secrets.insert(
        db.name.clone(),
        require(secrets, &db.name, "database URL")?.clone(),
    );

    if let Some(s3) = spec
        .storage
        .credentials
        .as_ref()
        .and_then(|c| c.secret.as_ref())
    {
        require_key(secrets, &s3.name, &s3.access_key_id_key, "S3 credentials")?;
        require_key(
            secrets,
            &s3.name,
            &s3.secret_access_key_key,
            "S3 credentials",
        )?;
        pod_secrets.insert(
            s3.name.clone(),
            require(secrets, &s3.name, "S3 credentials")?.clone(),
        );
    }
    if let Some(tokens) = &spec.push_tokens {
        let file = require_key(secrets, &tokens.secret_name, &tokens.key, "push tokens")?;
        super::token_file::check(file).map_err(|source| InvalidCache::TokenFile {
            secret: tokens.secret_name.clone(),
            key: tokens.key.clone(),
            source,
        })?;
        let data = require(secrets, &tokens.secret_name, "push tokens")?;
        pod_secrets.insert(tokens.secret_name.clone(), data.clone());
    }

    let key_secret = names::signing_key_secret(name, spec);
    let signing_key = match secrets.get(&key_secret).and_then(Option::as_ref) {
        None => SigningKeyState::Generate {
            key_name: spec
                .signing_key
                .key_name
                .clone()
                .unwrap_or_else(|| signing_key::default_key_name(&url)),
        },
        Some(data) => {
            let bytes =
                data.get(&spec.signing_key.key)
                    .ok_or_else(|| InvalidCache::SecretKeyMissing {
                        secret: key_secret.clone(),
                        key: spec.signing_key.key.clone(),
                        purpose: "signing key",
                    })?;
            let public_key =
                signing_key::public_key(&String::from_utf8_lossy(bytes)).map_err(|source| {
                    InvalidCache::SigningKey {
                        secret: key_secret.clone(),
                        source,
                    }
                })?;
            pod_secrets.insert(key_secret.clone(), data.clone());
            SigningKeyState::Existing { public_key }
        }
    };

    Ok(ValidCache {
        view: CacheView {
            name,
            namespace,
            owner,
            spec,
            url,
        },
        image: spec
            .workers
            .image
            .clone()
            .unwrap_or_else(|| defaults.worker_image.clone()),
        signing_key,
        pod_secrets,
        database_checksum,
    })
}

/// Checks the schema cannot express, or that old API servers may not have enforced.
fn check_fields(cache: &BinaryCache) -> Result<(), InvalidCache> {
    let spec = &cache.spec;
    let field = |field, message: &str| InvalidCache::Field {
        field,
        message: message.to_string(),
    };
    for (path, url) in [
        ("url", &spec.url),
        ("storage.endpoint", &spec.storage.endpoint),
    ] {
        // The same test the worker applies to the URL at start: a URL let through here
        // would only fail later, as a crash-looping Pod.
        let parsed = url.as_deref().map(url::Url::parse);
        if let Some(parsed) = parsed {
            let ok = parsed.is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host());
            if !ok {
                return Err(field(path, "must be an http:// or https:// URL"));
            }
        }
    }
    if let Some(creds) = &spec.storage.credentials {
        if creds.role_arn.is_some() == creds.secret.is_some() {
            return Err(field(
                "storage.credentials",
                "set exactly one of roleArn and secret",
            ));
        }
    }
    if let Some(scaling) = &spec.workers.autoscaling {
        if scaling.min_replicas > scaling.max_replicas {
            return Err(field(
                "workers.autoscaling",
                "minReplicas must not exceed maxReplicas",
            ));
        }
    }
    if spec.workers.replicas < 0 {
        return Err(field("workers.replicas", "must not be negative"));
    }
    if spec.workers.image.as_deref() == Some("") {
        return Err(field("workers.image", "must not be empty"));
    }
    Ok(())
}

fn require<'s>(
    secrets: &'s Secrets,
    secret: &str,
    purpose: &'static str,
) -> Result<&'s SecretData, InvalidCache> {
    secrets
        .get(secret)
        .and_then(Option::as_ref)
        .ok_or_else(|| InvalidCache::SecretNotFound {
            secret: secret.to_string(),
            purpose,
        })
}

fn require_key<'s>(
    secrets: &'s Secrets,
    secret: &str,
    key: &str,
    purpose: &'static str,
) -> Result<&'s [u8], InvalidCache> {
    require(secrets, secret, purpose)?
        .get(key)
        .map(Vec::as_slice)
        .ok_or_else(|| InvalidCache::SecretKeyMissing {
            secret: secret.to_string(),
            key: key.to_string(),
            purpose,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    const TOKENS: &str = "0123456789abcdef push ci\n";

    fn defaults() -> Defaults {
        Defaults {
            worker_image: "larder:default".into(),
        }
    }

    fn secrets(entries: &[(&str, &[(&str, &str)])]) -> Secrets {
        entries
            .iter()
            .map(|(name, data)| {
                let data = data
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect();
                (name.to_string(), Some(data))
            })
            .collect()
    }

    #[test]
    fn minimal_cache_is_valid_and_asks_for_a_key() {
        let cache = fixtures::minimal();
        let found = secrets(&[("larder-db", &[("url", "postgres://db/larder")])]);
        let valid = validate(&cache, &found, &defaults()).unwrap();
        assert_eq!(valid.image, "larder:default");
        assert_eq!(valid.view.url, "http://main.nix.svc");
        assert_eq!(
            valid.signing_key,
            SigningKeyState::Generate {
                key_name: "main.nix.svc-1".into()
            }
        );
        assert_eq!(valid.pod_secrets.len(), 1);
    }

    #[test]
    fn missing_database_secret_is_named() {
        let cache = fixtures::minimal();
        let err = validate(&cache, &Secrets::new(), &defaults()).unwrap_err();
        assert_eq!(err.reason(), "SecretNotFound");
        assert!(err.to_string().contains("larder-db"), "{err}");
        assert!(err.waits_on_other_objects());
    }

    #[test]
    fn missing_key_in_database_secret_is_named() {
        let cache = fixtures::minimal();
        let found = secrets(&[("larder-db", &[("uri", "postgres://")])]);
        let err = validate(&cache, &found, &defaults()).unwrap_err();
        assert_eq!(err.reason(), "SecretKeyMissing");
        assert!(err.to_string().contains("\"url\""), "{err}");
    }

    #[test]
    fn full_cache_needs_all_its_secrets() {
        let cache = fixtures::full();
        let key = signing_key::generate("cache.example.org-1", [3; 32]);
        let mut found = secrets(&[
            ("larder-db", &[("url", "postgres://db/larder")]),
            (
                "s3-keys",
                &[("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")],
            ),
            ("cache-key", &[("secret-key", &key)]),
        ]);
        let err = validate(&cache, &found, &defaults()).unwrap_err();
        assert_eq!(
            err,
            InvalidCache::SecretNotFound {
                secret: "push-tokens".into(),
                purpose: "push tokens"
            }
        );
        found.extend(secrets(&[("push-tokens", &[("tokens", "t0ken")])]));
        let err = validate(&cache, &found, &defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidTokenFile");
        assert!(err.to_string().contains("line 1"), "{err}");
        assert!(err.waits_on_other_objects());
        found.extend(secrets(&[("push-tokens", &[("tokens", TOKENS)])]));
        let valid = validate(&cache, &found, &defaults()).unwrap();
        assert_eq!(valid.image, "larder:1.2.3");
        assert_eq!(valid.view.url, "https://cache.example.org");
        assert_eq!(
            valid.signing_key,
            SigningKeyState::Existing {
                public_key: signing_key::public_key(&key).unwrap()
            }
        );
        assert_eq!(valid.pod_secrets.len(), 4);
    }

    #[test]
    fn a_broken_signing_key_is_invalid() {
        let cache = fixtures::minimal();
        let found = secrets(&[
            ("larder-db", &[("url", "postgres://db")]),
            ("main-signing-key", &[("secret-key", "not a key")]),
        ]);
        let err = validate(&cache, &found, &defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSigningKey");
    }

    #[test]
    fn both_credentials_are_rejected() {
        let mut cache = fixtures::irsa();
        let full = fixtures::full();
        cache.spec.storage.credentials.as_mut().unwrap().secret =
            full.spec.storage.credentials.unwrap().secret;
        let found = secrets(&[("larder-db", &[("url", "postgres://db")])]);
        let err = validate(&cache, &found, &defaults()).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(!err.waits_on_other_objects());
    }

    #[test]
    fn bad_urls_and_scaling_are_rejected() {
        let found = secrets(&[("larder-db", &[("url", "postgres://db")])]);
        // What the worker's own URL check refuses, so it never crash-loops on it.
        for bad in [
            "cache.example.org",
            "https://cache example.org",
            "http://",
            "http://[::1",
        ] {
            let mut cache = fixtures::minimal();
            cache.spec.url = Some(bad.into());
            assert!(
                matches!(
                    validate(&cache, &found, &defaults()),
                    Err(InvalidCache::Field { field: "url", .. })
                ),
                "{bad}"
            );
        }
        let mut cache = fixtures::full();
        cache
            .spec
            .workers
            .autoscaling
            .as_mut()
            .unwrap()
            .min_replicas = 20;
        assert!(matches!(
            validate(&cache, &found, &defaults()),
            Err(InvalidCache::Field {
                field: "workers.autoscaling",
                ..
            })
        ));
    }

    #[test]
    fn autoscaling_without_resources_is_valid() {
        // Every pod requests CPU by default (build::resources), so the autoscaler has a
        // request to aim at: caches made before the default need no change.
        let found = secrets(&[("larder-db", &[("url", "postgres://db")])]);
        let mut cache = fixtures::full();
        cache.spec.storage.credentials = None;
        cache.spec.signing_key = fixtures::minimal().spec.signing_key;
        cache.spec.push_tokens = None;
        cache.spec.workers.resources = None;
        assert!(cache.spec.workers.autoscaling.is_some());
        validate(&cache, &found, &defaults()).unwrap();
    }

    #[test]
    fn a_cache_without_uid_cannot_own_children() {
        let mut cache = fixtures::minimal();
        cache.metadata.uid = None;
        let err = validate(&cache, &Secrets::new(), &defaults()).unwrap_err();
        assert_eq!(err, InvalidCache::Metadata("uid"));
    }

    #[test]
    fn referenced_secrets_are_listed_once() {
        assert_eq!(
            referenced_secrets(&fixtures::full()),
            ["cache-key", "larder-db", "push-tokens", "s3-keys"]
        );
        assert_eq!(
            referenced_secrets(&fixtures::minimal()),
            ["larder-db", "main-signing-key"]
        );
    }
}
