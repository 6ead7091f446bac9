//! The committed CRDs install on a real API server and serve what users type.

use kube::core::GroupVersionKind;
use kube::discovery::Discovery;
use larder_e2e::k8s::ControlPlane;

use crate::support::install_crds;

#[tokio::test]
async fn crds_install_from_the_committed_yaml() {
    let client = ControlPlane::client().await;
    let crds = install_crds(&client).await;
    let names: Vec<_> = crds
        .iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(names, ["binarycaches.larder.dev", "gcpolicies.larder.dev"]);

    // Discovery is what `kubectl get bc` resolves short names through.
    let discovery = Discovery::new(client.clone())
        .filter(&["larder.dev"])
        .run()
        .await
        .unwrap();
    for (kind, plural, short) in [
        ("BinaryCache", "binarycaches", "bc"),
        ("GCPolicy", "gcpolicies", "gcp"),
    ] {
        let gvk = GroupVersionKind::gvk("larder.dev", "v1alpha1", kind);
        let (resource, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("{kind} is not served"));
        assert_eq!(resource.plural, plural);
        assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);
        // The names the server accepted, not merely the ones the file asks for.
        let crd = crds.iter().find(|c| c.spec.names.kind == kind).unwrap();
        let accepted = &crd
            .status
            .as_ref()
            .unwrap()
            .accepted_names
            .as_ref()
            .unwrap();
        assert_eq!(
            accepted.short_names.as_deref(),
            Some(&[short.to_string()][..])
        );
        assert_eq!(
            accepted.categories.as_deref(),
            Some(&["larder".to_string()][..])
        );
        let version = &crd.spec.versions[0];
        assert!(
            version.served && version.storage,
            "{kind} v1alpha1 served and stored"
        );
        let subresources = version.subresources.as_ref().unwrap();
        assert!(
            subresources.status.is_some(),
            "{kind} has a status subresource"
        );
    }
}
