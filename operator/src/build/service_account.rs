//! The workers' ServiceAccount, carrying the IRSA role when one is given.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ServiceAccount;

use super::{child_meta, labels, names, CacheView, Component};

/// Annotation EKS reads to give the account's pods an IAM role.
pub const IRSA_ANNOTATION: &str = "eks.amazonaws.com/role-arn";

/// The ServiceAccount every Larder pod of `cache` runs as.
pub fn build(cache: &CacheView) -> ServiceAccount {
    let mut metadata = child_meta(
        names::workers(cache.name),
        cache.namespace,
        labels(cache.name, Component::Worker),
        Some(&cache.owner),
    );
    let role = cache
        .spec
        .storage
        .credentials
        .as_ref()
        .and_then(|c| c.role_arn.clone());
    metadata.annotations = role.map(|arn| BTreeMap::from([(IRSA_ANNOTATION.to_string(), arn)]));
    ServiceAccount {
        metadata,
        // Pods opt in to a token (IRSA needs it); the account never hands one out by default.
        automount_service_account_token: Some(false),
        ..ServiceAccount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn irsa_role_becomes_an_annotation() {
        let cache = fixtures::irsa();
        let sa = build(&fixtures::view(&cache, "http://x"));
        assert_eq!(
            sa.metadata.annotations.unwrap()[IRSA_ANNOTATION],
            "arn:aws:iam::123456789012:role/larder-worker"
        );
    }

    #[test]
    fn no_role_no_annotation() {
        let cache = fixtures::full();
        let sa = build(&fixtures::view(&cache, "http://x"));
        assert_eq!(sa.metadata.annotations, None);
        assert_eq!(sa.metadata.name.as_deref(), Some("main"));
    }
}
