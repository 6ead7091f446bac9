//! The worker Deployment.

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{ContainerPort, HTTPGetAction, PodTemplateSpec, Probe};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{
    child_meta, labels, names, pod, selector_labels, CacheView, Component, CHECKSUM_ANNOTATION,
    WORKER_PORT,
};

/// Workers running `larder serve` with `image`; `checksum` covers their config and Secrets so
/// that a change to either rolls the pods.
pub fn build(cache: &CacheView, image: &str, checksum: &str) -> Deployment {
    let workers = &cache.spec.workers;
    let process = pod::Process {
        args: vec!["serve".into()],
        signing_key: true,
        push_tokens: true,
    };
    let mut pod_spec = pod::spec(cache.name, cache.spec, image, &process);
    if let Some(container) = pod_spec.containers.first_mut() {
        container.ports = Some(vec![ContainerPort {
            name: Some("http".into()),
            container_port: WORKER_PORT,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        }]);
        container.liveness_probe = Some(health_probe(10, 6));
        container.readiness_probe = Some(health_probe(5, 2));
    }
    let mut annotations = workers.pod_annotations.clone();
    annotations.insert(CHECKSUM_ANNOTATION.to_string(), checksum.to_string());
    Deployment {
        metadata: child_meta(
            names::workers(cache.name),
            cache.namespace,
            labels(cache.name, Component::Worker),
            Some(&cache.owner),
        ),
        spec: Some(DeploymentSpec {
            // With an autoscaler the replica count is its business; applying one would fight it.
            replicas: workers.autoscaling.is_none().then_some(workers.replicas),
            selector: LabelSelector {
                match_labels: Some(selector_labels(cache.name, Component::Worker)),
                ..LabelSelector::default()
            },
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".into()),
                // Workers are stateless; never drop below the wanted count while rolling.
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::String("25%".into())),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(cache.name, Component::Worker)),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn health_probe(period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/health".into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The replica count to hand over before `wanted` (which leaves replicas to an autoscaler) is
/// applied over `current`, when `manager` still owns `spec.replicas` there.
///
/// A server-side apply that drops a field its manager alone owned removes the field, and the
/// API server defaults a Deployment without replicas to one: turning autoscaling on would
/// scale the workers to one until the autoscaler catches up. Another manager applying the
/// current count first shares the field, so it stays; the autoscaler's next write takes it.
pub fn replicas_to_hand_over(
    current: &Deployment,
    wanted: &Deployment,
    manager: &str,
) -> Option<i32> {
    if wanted.spec.as_ref()?.replicas.is_some() {
        return None;
    }
    let replicas = current.spec.as_ref()?.replicas?;
    let owned = current
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.manager.as_deref() == Some(manager)
                && m.subresource.as_deref().unwrap_or("").is_empty()
        })
        .filter_map(|m| m.fields_v1.as_ref())
        .any(|f| {
            f.0.get("f:spec")
                .and_then(|s| s.get("f:replicas"))
                .is_some()
        });
    owned.then_some(replicas)
}

/// The image a Deployment's worker container runs, if any.
pub fn image_of(deployment: &Deployment) -> Option<&str> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == pod::CONTAINER)?
        .image
        .as_deref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn probes_hit_health_on_the_http_port() {
        let cache = fixtures::minimal();
        let d = build(&fixtures::view(&cache, "http://x"), "larder:1", "abc");
        let c = &d
            .spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0];
        for probe in [&c.liveness_probe, &c.readiness_probe] {
            let get = probe.as_ref().unwrap().http_get.as_ref().unwrap();
            assert_eq!(get.path.as_deref(), Some("/health"));
            assert_eq!(get.port, IntOrString::String("http".into()));
        }
        assert_eq!(c.args, Some(vec!["serve".to_string()]));
        assert_eq!(image_of(&d), Some("larder:1"));
    }

    #[test]
    fn checksum_and_pod_annotations_reach_the_template() {
        let cache = fixtures::full();
        let d = build(&fixtures::view(&cache, "http://x"), "larder:1", "abc");
        let meta = d.spec.unwrap().template.metadata.unwrap();
        let annotations = meta.annotations.unwrap();
        assert_eq!(annotations[CHECKSUM_ANNOTATION], "abc");
        assert_eq!(annotations["example.org/team"], "nix");
    }

    #[test]
    fn replicas_are_handed_over_only_when_the_operator_owned_them() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
        let minimal = fixtures::minimal();
        let mut current = build(&fixtures::view(&minimal, "http://x"), "larder:1", "abc");
        let full = fixtures::full();
        let autoscaled = build(&fixtures::view(&full, "http://x"), "larder:1", "abc");
        let entry = |manager: &str| ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Apply".into()),
            fields_v1: Some(FieldsV1(
                serde_json::json!({"f:spec": {"f:replicas": {}, "f:template": {}}}),
            )),
            ..ManagedFieldsEntry::default()
        };
        current.metadata.managed_fields = Some(vec![entry("larder-operator")]);
        assert_eq!(
            replicas_to_hand_over(&current, &autoscaled, "larder-operator"),
            Some(2)
        );
        // Still wanted with a count: nothing to hand over.
        assert_eq!(
            replicas_to_hand_over(&current, &current.clone(), "larder-operator"),
            None
        );
        // Already the autoscaler's.
        current.metadata.managed_fields = Some(vec![entry("kube-controller-manager")]);
        assert_eq!(
            replicas_to_hand_over(&current, &autoscaled, "larder-operator"),
            None
        );
    }

    #[test]
    fn autoscaled_workers_leave_replicas_alone() {
        let full = fixtures::full();
        let d = build(&fixtures::view(&full, "http://x"), "larder:1", "abc");
        assert_eq!(d.spec.unwrap().replicas, None);
        let minimal = fixtures::minimal();
        let d = build(&fixtures::view(&minimal, "http://x"), "larder:1", "abc");
        assert_eq!(d.spec.unwrap().replicas, Some(2));
    }
}
