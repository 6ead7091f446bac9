//! The Ingress routing the cache's host to the workers, when asked for.

use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};

use super::{child_meta, labels, names, CacheView, Component};

/// An Ingress for `spec.ingress`, or none.
pub fn build(cache: &CacheView) -> Option<Ingress> {
    let ingress = cache.spec.ingress.as_ref()?;
    let mut metadata = child_meta(
        names::workers(cache.name),
        cache.namespace,
        labels(cache.name, Component::Worker),
        Some(&cache.owner),
    );
    metadata.annotations = (!ingress.annotations.is_empty()).then(|| ingress.annotations.clone());
    let backend = IngressBackend {
        service: Some(IngressServiceBackend {
            name: names::workers(cache.name),
            port: Some(ServiceBackendPort {
                name: Some("http".into()),
                number: None,
            }),
        }),
        resource: None,
    };
    Some(Ingress {
        metadata,
        spec: Some(IngressSpec {
            ingress_class_name: ingress.class_name.clone(),
            rules: Some(vec![IngressRule {
                host: Some(ingress.host.clone()),
                http: Some(HTTPIngressRuleValue {
                    paths: vec![HTTPIngressPath {
                        path: Some("/".into()),
                        path_type: "Prefix".into(),
                        backend,
                    }],
                }),
            }]),
            tls: ingress.tls_secret_name.as_ref().map(|secret| {
                vec![IngressTLS {
                    hosts: Some(vec![ingress.host.clone()]),
                    secret_name: Some(secret.clone()),
                }]
            }),
            ..IngressSpec::default()
        }),
        ..Ingress::default()
    })
}

/// The URL clients reach through the Ingress.
pub fn url(ingress: &crate::crd::IngressSpec) -> String {
    let scheme = if ingress.tls_secret_name.is_some() {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", ingress.host)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn ingress_routes_the_host_with_tls() {
        let cache = fixtures::full();
        let ing = build(&fixtures::view(&cache, "http://x")).unwrap();
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        assert_eq!(
            spec.rules.unwrap()[0].host.as_deref(),
            Some("cache.example.org")
        );
        assert_eq!(
            spec.tls.unwrap()[0].secret_name.as_deref(),
            Some("cache-example-org-tls")
        );
        assert_eq!(
            url(cache.spec.ingress.as_ref().unwrap()),
            "https://cache.example.org"
        );
    }

    #[test]
    fn no_ingress_asked_none_built() {
        let cache = fixtures::minimal();
        assert_eq!(build(&fixtures::view(&cache, "http://x")), None);
    }
}
