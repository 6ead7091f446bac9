//! A child's name already taken by an object the operator did not make: the operator leaves
//! it alone, says so in status and one Event, and takes the name once it is free.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use kube::api::{DeleteParams, ObjectMeta};
use kube::Api;
use larder_e2e::k8s::ControlPlane;

use crate::support::{
    condition, create, database_secret, events_about, eventually, get, install_crds, minimal_cache,
    ready_reason, Operator, WAIT,
};

fn selector(service: &Service) -> BTreeMap<String, String> {
    service
        .spec
        .as_ref()
        .and_then(|s| s.selector.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_object_under_a_childs_name_is_left_alone_and_reported() {
    let (client, ns) = ControlPlane::namespace("operator-conflict").await;
    install_crds(&client).await;
    // Someone else's Service, named like the cache about to be made.
    let theirs = BTreeMap::from([("app".to_string(), "web".to_string())]);
    let foreign = Service {
        metadata: ObjectMeta {
            name: Some("web".into()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            selector: Some(theirs.clone()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    create(&client, &ns, &foreign).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("web")).await;

    let cache = ready_reason(&client, &ns, "web", "ChildConflict").await;
    let (degraded, _, message) = condition(&cache, "Degraded").unwrap();
    assert_eq!(degraded, "True");
    assert!(message.contains("Service web"), "{message}");
    // Untouched: neither rewired to the workers nor owned (which would have the garbage
    // collector delete it with the cache).
    let service: Service = get(&client, &ns, "web").await.unwrap();
    assert_eq!(selector(&service), theirs);
    assert_eq!(service.metadata.owner_references, None);

    // Retries do not repeat the Warning.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let warnings: Vec<_> = events_about(&client, &ns, "web")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| e.reason.unwrap_or_default())
        .collect();
    assert_eq!(warnings, ["ChildConflict"]);

    // Once the name is free, a retry makes the cache's own Service.
    Api::<Service>::namespaced(client.clone(), &ns)
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the cache's own Service", WAIT * 2, async || {
        let service: Service = get(&client, &ns, "web").await.ok_or("absent")?;
        let owned = service.metadata.owner_references.is_some();
        (owned && selector(&service) != theirs)
            .then_some(())
            .ok_or_else(|| format!("{:?}", selector(&service)))
    })
    .await;
    ready_reason(&client, &ns, "web", "NoWorkers").await;
}
