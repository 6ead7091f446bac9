//! Validation of a `GCPolicy` against the cache it names.

use kube::Resource;

use super::parse_duration;
use crate::build::gc_cronjob::GcView;
use crate::crd::{BinaryCache, GCPolicy};

/// Why a GC policy cannot be reconciled; each becomes a condition reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InvalidGcPolicy {
    /// Name, namespace or uid missing (never from the API server).
    #[error("metadata.{0} is missing")]
    Metadata(&'static str),
    /// The referenced BinaryCache does not exist.
    #[error("BinaryCache {0} not found")]
    CacheNotFound(String),
    /// The cache's database has not been migrated yet, so no image is known to be safe.
    #[error("BinaryCache {0} has not finished its database migration")]
    CacheNotReady(String),
    /// A duration `larder gc` would refuse.
    #[error("spec.{field}: {value:?} is not a duration like 720h, 30d or 1h30m")]
    Duration {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
}

impl InvalidGcPolicy {
    /// The condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Metadata(_) => "MissingMetadata",
            Self::CacheNotFound(_) => "CacheNotFound",
            Self::CacheNotReady(_) => "CacheNotReady",
            Self::Duration { .. } => "InvalidSpec",
        }
    }

    /// Whether the problem may go away without a change to the policy.
    pub fn waits_on_other_objects(&self) -> bool {
        matches!(self, Self::CacheNotFound(_) | Self::CacheNotReady(_))
    }
}

/// Checks `policy` against its cache (`None` when the cache does not exist).
pub fn validate_gc_policy<'a>(
    policy: &'a GCPolicy,
    cache: Option<&'a BinaryCache>,
) -> Result<GcView<'a>, InvalidGcPolicy> {
    let name = policy
        .metadata
        .name
        .as_deref()
        .ok_or(InvalidGcPolicy::Metadata("name"))?;
    let namespace = policy
        .metadata
        .namespace
        .as_deref()
        .ok_or(InvalidGcPolicy::Metadata("namespace"))?;
    let owner = policy
        .controller_owner_ref(&())
        .ok_or(InvalidGcPolicy::Metadata("uid"))?;
    let spec = &policy.spec;
    for (field, value) in [
        ("retention", &spec.retention),
        ("failedUploadGrace", &spec.failed_upload_grace),
    ] {
        if parse_duration(value).is_none() {
            return Err(InvalidGcPolicy::Duration {
                field,
                value: value.clone(),
            });
        }
    }
    let cache_name = &spec.cache_ref.name;
    let cache = cache.ok_or_else(|| InvalidGcPolicy::CacheNotFound(cache_name.clone()))?;
    let image = cache
        .status
        .as_ref()
        .and_then(|s| s.migrated_image.as_deref())
        .ok_or_else(|| InvalidGcPolicy::CacheNotReady(cache_name.clone()))?;
    Ok(GcView {
        name,
        namespace,
        owner,
        spec,
        cache: cache_name,
        cache_spec: &cache.spec,
        image,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;
    use crate::crd::BinaryCacheStatus;

    fn migrated_cache() -> BinaryCache {
        let mut cache = fixtures::minimal();
        cache.status = Some(BinaryCacheStatus {
            migrated_image: Some("larder:7".into()),
            ..BinaryCacheStatus::default()
        });
        cache
    }

    #[test]
    fn policy_runs_the_migrated_image() {
        let policy = fixtures::gc_policy();
        let cache = migrated_cache();
        let view = validate_gc_policy(&policy, Some(&cache)).unwrap();
        assert_eq!(view.image, "larder:7");
        assert_eq!(view.cache, "main");
    }

    #[test]
    fn missing_or_unmigrated_cache_waits() {
        let policy = fixtures::gc_policy();
        let err = validate_gc_policy(&policy, None).unwrap_err();
        assert_eq!(err.reason(), "CacheNotFound");
        assert!(err.waits_on_other_objects());
        let cache = fixtures::minimal();
        let err = validate_gc_policy(&policy, Some(&cache)).unwrap_err();
        assert_eq!(err.reason(), "CacheNotReady");
    }

    #[test]
    fn bad_duration_is_invalid_spec() {
        let mut policy = fixtures::gc_policy();
        policy.spec.retention = "30y".into();
        let cache = migrated_cache();
        let err = validate_gc_policy(&policy, Some(&cache)).unwrap_err();
        assert_eq!(err.reason(), "InvalidSpec");
        assert!(err.to_string().contains("30y"));
        assert!(!err.waits_on_other_objects());
    }
}
