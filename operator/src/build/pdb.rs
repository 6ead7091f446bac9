//! The PodDisruptionBudget keeping one worker up during voluntary disruptions.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, labels, names, selector_labels, CacheView, Component};

/// A budget allowing one worker down at a time, or none when a single worker runs
/// (a budget there would block node drains forever).
pub fn build(cache: &CacheView) -> Option<PodDisruptionBudget> {
    let workers = &cache.spec.workers;
    let least = workers
        .autoscaling
        .as_ref()
        .map_or(workers.replicas, |a| a.min_replicas);
    if least <= 1 {
        return None;
    }
    Some(PodDisruptionBudget {
        metadata: child_meta(
            names::workers(cache.name),
            cache.namespace,
            labels(cache.name, Component::Worker),
            Some(&cache.owner),
        ),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector_labels(cache.name, Component::Worker)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn one_worker_gets_no_budget() {
        let cache = fixtures::irsa();
        assert_eq!(build(&fixtures::view(&cache, "http://x")), None);
    }

    #[test]
    fn several_workers_get_a_budget() {
        let cache = fixtures::minimal();
        let pdb = build(&fixtures::view(&cache, "http://x")).unwrap();
        assert_eq!(pdb.spec.unwrap().max_unavailable, Some(IntOrString::Int(1)));
    }
}
