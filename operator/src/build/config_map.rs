//! The worker ConfigMap: every non-secret setting as an environment variable.
//!
//! Variables (the `larder` binary reads them; Secrets add `LARDER_DATABASE_URL` and, for static
//! keys, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`):
//! `LARDER_LISTEN`, `LARDER_CACHE_URL`, `LARDER_PRIORITY`, `LARDER_S3_BUCKET`,
//! `LARDER_S3_REGION`, `LARDER_S3_ENDPOINT`, `LARDER_S3_FORCE_PATH_STYLE`, `LARDER_S3_PREFIX`,
//! `LARDER_READ_PROXY`, `LARDER_REDIRECT_NARS`, `LARDER_READ_AUTH`, `LARDER_SIGNING_KEY_FILE`,
//! `LARDER_PUSH_TOKENS_DIR`, `LARDER_OIDC_PROVIDERS` (JSON), `LARDER_LOG_FORMAT`.

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
    set("LARDER_LISTEN", format!("0.0.0.0:{WORKER_PORT}"));
    set("LARDER_LOG_FORMAT", "json".into());
    set("LARDER_CACHE_URL", cache.url.clone());
    set("LARDER_PRIORITY", spec.priority.to_string());
    set("LARDER_S3_BUCKET", storage.bucket.clone());
    set("LARDER_S3_REGION", storage.region.clone());
    // The AWS SDK reads the region from here when no endpoint override is given.
    set("AWS_REGION", storage.region.clone());
    if let Some(endpoint) = &storage.endpoint {
        set("LARDER_S3_ENDPOINT", endpoint.clone());
    }
    set(
        "LARDER_S3_FORCE_PATH_STYLE",
        storage.force_path_style.to_string(),
    );
    if let Some(prefix) = &storage.prefix {
        set("LARDER_S3_PREFIX", prefix.clone());
    }
    set("LARDER_READ_PROXY", spec.read_proxy.enabled.to_string());
    set(
        "LARDER_REDIRECT_NARS",
        spec.read_proxy.redirect_nars.to_string(),
    );
    set("LARDER_READ_AUTH", spec.read_proxy.require_auth.to_string());
    set(
        "LARDER_SIGNING_KEY_FILE",
        format!("{}/{}", pod::SIGNING_KEY_DIR, pod::SIGNING_KEY_FILE),
    );
    if spec.push_tokens.is_some() {
        set("LARDER_PUSH_TOKENS_DIR", pod::PUSH_TOKENS_DIR.into());
    }
    if !spec.oidc_providers.is_empty() {
        // Serialising plain strings and vectors of strings cannot fail.
        let json = serde_json::to_string(&spec.oidc_providers).unwrap_or_default();
        set("LARDER_OIDC_PROVIDERS", json);
    }
    env
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
        assert_eq!(data["LARDER_S3_BUCKET"], "nix-cache");
        assert_eq!(data["LARDER_S3_REGION"], "us-east-1");
        assert_eq!(data["LARDER_PRIORITY"], "40");
        assert_eq!(data["LARDER_READ_PROXY"], "true");
        assert!(!data.contains_key("LARDER_S3_ENDPOINT"));
        assert!(!data.contains_key("LARDER_PUSH_TOKENS_DIR"));
        assert!(!data.contains_key("LARDER_OIDC_PROVIDERS"));
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
        assert_eq!(data["LARDER_S3_FORCE_PATH_STYLE"], "true");
        assert_eq!(data["LARDER_S3_PREFIX"], "cache/main");
        assert_eq!(data["LARDER_PUSH_TOKENS_DIR"], "/etc/larder/push-tokens");
        let oidc: serde_json::Value = serde_json::from_str(&data["LARDER_OIDC_PROVIDERS"]).unwrap();
        assert_eq!(oidc[0]["audience"], "larder");
        assert_eq!(data["LARDER_CACHE_URL"], "https://cache.example.org");
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
