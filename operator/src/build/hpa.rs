//! The HorizontalPodAutoscaler of the workers, when autoscaling is asked for.

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};

use super::{child_meta, labels, names, CacheView, Component};

/// An autoscaler on CPU utilisation, or none.
pub fn build(cache: &CacheView) -> Option<HorizontalPodAutoscaler> {
    let scaling = cache.spec.workers.autoscaling.as_ref()?;
    Some(HorizontalPodAutoscaler {
        metadata: child_meta(
            names::workers(cache.name),
            cache.namespace,
            labels(cache.name, Component::Worker),
            Some(&cache.owner),
        ),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: names::workers(cache.name),
            },
            min_replicas: Some(scaling.min_replicas),
            max_replicas: scaling.max_replicas,
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(scaling.target_cpu_utilization_percentage),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            ..HorizontalPodAutoscalerSpec::default()
        }),
        ..HorizontalPodAutoscaler::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn autoscaling_targets_the_deployment() {
        let cache = fixtures::full();
        let hpa = build(&fixtures::view(&cache, "http://x")).unwrap();
        let spec = hpa.spec.unwrap();
        assert_eq!(spec.scale_target_ref.name, "main");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(3), 10));
    }

    #[test]
    fn no_autoscaling_no_hpa() {
        let cache = fixtures::minimal();
        assert_eq!(build(&fixtures::view(&cache, "http://x")), None);
    }
}
