//! The worker ConfigMap: every non-secret setting as an environment variable.
//!
//! The `larder` binary is the source of truth: each variable is the `env` of one of its flags
//! (`larder serve --help`, `larder gc --help`, `larder migrate --help`); a subcommand ignores the
//! ones it has no flag for. Secrets add `LARDER_DATABASE_URL` and, for static keys,
//! `LARDER_S3_ACCESS_KEY_ID` / `LARDER_S3_SECRET_ACCESS_KEY` (see `pod.rs`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::{child_meta, labels, names, pod, CacheView, Component, WORKER_PORT};

/// The worker configuration as environment variables.
pub fn data(cache: &CacheView) -> BTreeMap<String, String> {
    let spec = cache.spec;
    let storage = &spec.storage;
    let mut env = BTreeMap::new();
    let mut set = |k: &str, v: String| {
        env.insert(k.to_string(), v);
    };
    // `serve` listens on loopback unless told otherwise; the Service must reach it.
    set("LARDER_LISTEN", format!("0.0.0.0:{WORKER_PORT}"));
    set("LARDER_PUBLIC_URL", cache.url.clone());
    // In a cluster a log collector reads the lines: one JSON object each, as the chart's
    // default for the operator.
    set("LARDER_LOG_FORMAT", "json".to_string());
    set("LARDER_PRIORITY", spec.priority.to_string());
    set(
        "LARDER_STORAGE",
        storage_url(&storage.bucket, storage.prefix.as_deref()),
    );
    set("LARDER_S3_REGION", storage.region.clone());
    // The AWS SDK's credential chain (IRSA's STS call) reads the region from here.
    set("AWS_REGION", storage.region.clone());
    if let Some(endpoint) = &storage.endpoint {
        set("LARDER_S3_ENDPOINT", endpoint.clone());
    }
    set("LARDER_S3_PATH_STYLE", storage.force_path_style.to_string());
    set(
        "LARDER_REDIRECT_NARS",
        spec.read_proxy.redirect_nars.to_string(),
    );
    set("LARDER_READ_AUTH", spec.read_proxy.require_auth.to_string());
    set(
        "LARDER_SIGNING_KEY_FILE",
        format!("{}/{}", pod::SIGNING_KEY_DIR, pod::SIGNING_KEY_FILE),
    );
    // Without a token file `serve` would make up a token per pod that nobody knows; an empty
    // file says plainly that this cache takes no pushes.
    let token_file = match spec.push_tokens {
        Some(_) => format!("{}/{}", pod::TOKENS_DIR, pod::TOKENS_FILE),
        None => "/dev/null".to_string(),
    };
    set("LARDER_TOKEN_FILE", token_file);
    // With PostgreSQL, S3, a key file and a token file nothing is written there; pointing it
    // into the writable /tmp keeps a stray write from failing on the read-only root.
    set("LARDER_DATA_DIR", pod::DATA_DIR.to_string());
    env
}

/// `LARDER_STORAGE`: `s3://bucket` or `s3://bucket/prefix`.
pub fn storage_url(bucket: &str, prefix: Option<&str>) -> String {
    match prefix
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
    {
        Some(prefix) => format!("s3://{bucket}/{prefix}"),
        None => format!("s3://{bucket}"),
    }
}

/// The ConfigMap holding [`data`].
pub fn build(cache: &CacheView) -> ConfigMap {
    ConfigMap {
        metadata: child_meta(
            names::config_map(cache.name),
            cache.namespace,
            labels(cache.name, Component::Worker),
            Some(&cache.owner),
        ),
        data: Some(data(cache)),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn minimal_cache_config() {
        let cache = fixtures::minimal();
        let view = fixtures::view(&cache, "http://main.nix.svc");
        let data = data(&view);
        assert_eq!(data["LARDER_STORAGE"], "s3://nix-cache");
        assert_eq!(data["LARDER_S3_REGION"], "us-east-1");
        assert_eq!(data["LARDER_S3_PATH_STYLE"], "false");
        assert_eq!(data["LARDER_PRIORITY"], "40");
        assert_eq!(data["LARDER_LISTEN"], "0.0.0.0:5050");
        assert_eq!(data["LARDER_PUBLIC_URL"], "http://main.nix.svc");
        assert_eq!(data["LARDER_TOKEN_FILE"], "/dev/null");
        assert!(!data.contains_key("LARDER_S3_ENDPOINT"));
    }

    #[test]
    fn full_cache_config() {
        let cache = fixtures::full();
        let view = fixtures::view(&cache, "https://cache.example.org");
        let data = data(&view);
        assert_eq!(
            data["LARDER_S3_ENDPOINT"],
            "https://s3.garage.internal:3900"
        );
        assert_eq!(data["LARDER_S3_PATH_STYLE"], "true");
        assert_eq!(data["LARDER_STORAGE"], "s3://nix-cache/cache/main");
        assert_eq!(data["LARDER_TOKEN_FILE"], "/etc/larder/tokens/tokens");
        assert_eq!(data["LARDER_REDIRECT_NARS"], "true");
        assert_eq!(data["LARDER_PUBLIC_URL"], "https://cache.example.org");
        assert_eq!(
            data["LARDER_SIGNING_KEY_FILE"],
            "/etc/larder/signing-key/secret-key"
        );
    }

    #[test]
    fn storage_url_trims_the_prefix() {
        assert_eq!(storage_url("b", None), "s3://b");
        assert_eq!(storage_url("b", Some("/")), "s3://b");
        assert_eq!(storage_url("b", Some("/cache/x/")), "s3://b/cache/x");
    }

    #[test]
    fn only_variables_the_worker_reads() {
        // Every name is the `env` of a `larder` flag (or the AWS SDK's region); a typo here
        // would be silently ignored by the worker.
        let known = [
            "AWS_REGION",
            "LARDER_DATA_DIR",
            "LARDER_LISTEN",
            "LARDER_LOG_FORMAT",
            "LARDER_PRIORITY",
            "LARDER_PUBLIC_URL",
            "LARDER_READ_AUTH",
            "LARDER_REDIRECT_NARS",
            "LARDER_S3_ENDPOINT",
            "LARDER_S3_PATH_STYLE",
            "LARDER_S3_REGION",
            "LARDER_SIGNING_KEY_FILE",
            "LARDER_STORAGE",
            "LARDER_TOKEN_FILE",
        ];
        let cache = fixtures::full();
        for name in data(&fixtures::view(&cache, "http://x")).keys() {
            assert!(known.contains(&name.as_str()), "{name}");
        }
    }

    #[test]
    fn config_map_is_owned_by_the_cache() {
        let cache = fixtures::minimal();
        let cm = build(&fixtures::view(&cache, "http://x"));
        assert_eq!(cm.metadata.name.as_deref(), Some("main-config"));
        let owner = &cm.metadata.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "BinaryCache");
        assert_eq!(owner.controller, Some(true));
    }
}
