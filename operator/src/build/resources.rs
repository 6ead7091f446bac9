//! Compute resources of every Larder pod: the cache's own, with default requests filled in.
//!
//! A pod without requests is BestEffort: the scheduler packs it anywhere, it is evicted
//! first under pressure, a namespace ResourceQuota that demands requests refuses it, and an
//! autoscaler aiming at a share of the CPU request has nothing to aim at. So every resource
//! the cache names neither a request nor a limit for gets a default request. A resource with
//! only a limit is left alone: the API server then requests the limit, and a default above
//! a small limit would make the pod invalid. No default limit: a CPU limit throttles NAR
//! streaming, and a memory limit depends on the load, which only the user knows.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// CPU requested when the cache sets no CPU request or limit: an idle worker needs little,
/// and a busy one may use more (no limit).
pub const DEFAULT_CPU_REQUEST: &str = "100m";
/// Memory requested when the cache sets no memory request or limit: room for upload and
/// read buffers and the narinfo cache of a worker under moderate load.
pub const DEFAULT_MEMORY_REQUEST: &str = "256Mi";

/// The resources of a Larder pod: `set` (the cache's `workers.resources`) with a default
/// request for each of CPU and memory that it names in neither requests nor limits.
pub fn with_defaults(set: Option<&ResourceRequirements>) -> ResourceRequirements {
    let mut resources = set.cloned().unwrap_or_default();
    let limits = resources.limits.clone().unwrap_or_default();
    let mut requests = resources.requests.take().unwrap_or_default();
    for (name, default) in [
        ("cpu", DEFAULT_CPU_REQUEST),
        ("memory", DEFAULT_MEMORY_REQUEST),
    ] {
        if !requests.contains_key(name) && !limits.contains_key(name) {
            requests.insert(name.to_string(), Quantity(default.to_string()));
        }
    }
    resources.requests = (!requests.is_empty()).then_some(requests);
    resources
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn quantities(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, Quantity>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect(),
        )
    }

    #[test]
    fn nothing_set_gets_both_default_requests() {
        let r = with_defaults(None);
        assert_eq!(
            r.requests,
            quantities(&[("cpu", "100m"), ("memory", "256Mi")])
        );
        assert_eq!(r.limits, None);
    }

    #[test]
    fn what_the_cache_sets_wins() {
        let set = ResourceRequirements {
            requests: quantities(&[("cpu", "2")]),
            ..ResourceRequirements::default()
        };
        let r = with_defaults(Some(&set));
        assert_eq!(r.requests, quantities(&[("cpu", "2"), ("memory", "256Mi")]));
    }

    #[test]
    fn a_limit_alone_gets_no_default_request() {
        // A default request above a small limit would make every pod invalid.
        let set = ResourceRequirements {
            limits: quantities(&[("memory", "128Mi"), ("cpu", "50m")]),
            ..ResourceRequirements::default()
        };
        let r = with_defaults(Some(&set));
        assert_eq!(r.requests, None);
        assert_eq!(r.limits, set.limits);
    }
}
