//! YAML fixtures shared by the builder and validation tests.

use crate::crd::{BinaryCache, GCPolicy};

fn parse<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_norway::from_str(yaml).expect("fixture parses")
}

/// A cache with only the required fields.
pub fn minimal() -> BinaryCache {
    parse(include_str!("../../fixtures/minimal.yaml"))
}

/// A cache using every option.
pub fn full() -> BinaryCache {
    parse(include_str!("../../fixtures/full.yaml"))
}

/// A cache on AWS with IRSA.
pub fn irsa() -> BinaryCache {
    parse(include_str!("../../fixtures/irsa.yaml"))
}

/// A nightly dry-run GC policy of `main`.
pub fn gc_policy() -> GCPolicy {
    parse(include_str!("../../fixtures/gcpolicy.yaml"))
}

/// The builders' view of `cache` with the given URL.
pub fn view<'a>(cache: &'a BinaryCache, url: &str) -> crate::build::CacheView<'a> {
    use kube::Resource;
    crate::build::CacheView {
        name: cache.metadata.name.as_deref().expect("fixture has a name"),
        namespace: cache
            .metadata
            .namespace
            .as_deref()
            .expect("fixture has a namespace"),
        owner: cache.controller_owner_ref(&()).expect("fixture has a uid"),
        spec: &cache.spec,
        url: url.to_string(),
    }
}
