//! Installing CustomResourceDefinitions from a YAML file, as `kubectl apply -f` would.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use serde::Deserialize;

/// Server-side applies every CRD in the multi-document YAML file at `path`, waits until the
/// API server serves each (`Established`), and returns them as served.
pub async fn install(
    client: &Client,
    path: &Path,
    timeout: Duration,
) -> Vec<CustomResourceDefinition> {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read CRDs {}: {e}", path.display()));
    let crds: Vec<CustomResourceDefinition> = serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            CustomResourceDefinition::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", path.display()))
        })
        .collect();
    let api = Api::<CustomResourceDefinition>::all(client.clone());
    let params = PatchParams::apply("larder-e2e").force();
    for crd in &crds {
        api.patch(&crd.name_any(), &params, &Patch::Apply(crd))
            .await
            .unwrap_or_else(|e| panic!("apply CRD {}: {e}", crd.name_any()));
    }
    let mut served = Vec::new();
    for crd in &crds {
        let name = crd.name_any();
        let deadline = Instant::now() + timeout;
        loop {
            let crd = api
                .get(&name)
                .await
                .unwrap_or_else(|e| panic!("read CRD {name}: {e}"));
            let conditions = crd
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                served.push(crd);
                break;
            }
            assert!(
                Instant::now() < deadline,
                "CRD {name} not Established after {timeout:?}: {conditions:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    served
}
