//! The Service in front of the workers.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{child_meta, labels, names, selector_labels, CacheView, Component};

/// The Service routing the cache's port to the workers' `http` port.
pub fn build(cache: &CacheView) -> Service {
    let spec = &cache.spec.service;
    let mut metadata = child_meta(
        names::workers(cache.name),
        cache.namespace,
        labels(cache.name, Component::Worker),
        Some(&cache.owner),
    );
    metadata.annotations = (!spec.annotations.is_empty()).then(|| spec.annotations.clone());
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().into()),
            selector: Some(selector_labels(cache.name, Component::Worker)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: spec.port,
                target_port: Some(IntOrString::String("http".into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The in-cluster URL of the Service, used when the cache names no URL and has no Ingress.
pub fn cluster_url(cache: &str, namespace: &str, port: i32) -> String {
    if port == 80 {
        format!("http://{cache}.{namespace}.svc")
    } else {
        format!("http://{cache}.{namespace}.svc:{port}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn service_selects_workers_on_the_named_port() {
        let cache = fixtures::full();
        let svc = build(&fixtures::view(&cache, "http://x"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(
            spec.selector.unwrap()["app.kubernetes.io/component"],
            "worker"
        );
        assert!(svc.metadata.annotations.is_some());
    }

    #[test]
    fn cluster_url_omits_the_default_port() {
        assert_eq!(cluster_url("main", "nix", 80), "http://main.nix.svc");
        assert_eq!(cluster_url("main", "nix", 8080), "http://main.nix.svc:8080");
    }
}
