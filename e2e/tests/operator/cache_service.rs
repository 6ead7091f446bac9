//! A Service can change type both ways: the ports the API server allocated for a
//! LoadBalancer do not make the apply back to ClusterIP fail forever.

use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams};
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    create, database_secret, eventually, get, install_crds, minimal_cache, Operator, WAIT,
};

async fn service_type(client: &kube::Client, ns: &str) -> Result<(String, bool), String> {
    let svc: Service = get(client, ns, "main").await.ok_or("absent")?;
    let spec = svc.spec.unwrap_or_default();
    let node_port = spec.ports.iter().flatten().any(|p| p.node_port.is_some());
    Ok((spec.type_.unwrap_or_default(), node_port))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_changes_type_both_ways() {
    let (client, ns) = ControlPlane::namespace("operator-service").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let mut cache = minimal_cache("main");
    cache.spec.service.type_ = larder_operator::crd::ServiceType::LoadBalancer;
    create(&client, &ns, &cache).await;
    eventually(
        "a LoadBalancer with a node port",
        WAIT,
        async || match service_type(&client, &ns).await? {
            (t, true) if t == "LoadBalancer" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;

    let patch = serde_json::json!({"spec": {"service": {"type": "ClusterIP"}}});
    Api::<BinaryCache>::namespaced(client.clone(), &ns)
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually(
        "a ClusterIP Service without node ports",
        WAIT,
        async || match service_type(&client, &ns).await? {
            (t, false) if t == "ClusterIP" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await;
}
