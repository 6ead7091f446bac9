//! The real Kubernetes control plane: objects round-trip, the garbage collector
//! follows owner references, and RBAC refuses an identity without rights.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, DeleteParams, PostParams};
use larder_e2e::k8s::{ControlPlane, TEST_ANNOTATION};

fn config_map(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..ObjectMeta::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ),
        ..ConfigMap::default()
    }
}

#[tokio::test]
async fn config_map_round_trips_in_a_fresh_namespace() {
    let (client, ns) = ControlPlane::namespace("config_map_round_trips").await;
    let namespace = Api::<Namespace>::all(client.clone())
        .get(&ns)
        .await
        .unwrap();
    assert_eq!(
        namespace.metadata.annotations.unwrap()[TEST_ANNOTATION],
        "config_map_round_trips"
    );

    let maps = Api::<ConfigMap>::namespaced(client, &ns);
    let created = maps
        .create(
            &PostParams::default(),
            &config_map("settings", &[("cache", "larder"), ("shards", "16")]),
        )
        .await
        .unwrap();
    assert!(created.metadata.uid.is_some(), "the server assigns a uid");

    let read = maps.get("settings").await.unwrap();
    let expected = BTreeMap::from([
        ("cache".to_string(), "larder".to_string()),
        ("shards".to_string(), "16".to_string()),
    ]);
    assert_eq!(read.data, Some(expected));
    assert_eq!(read.metadata.namespace.as_deref(), Some(ns.as_str()));
}

#[tokio::test]
async fn deleting_an_owner_collects_what_it_owns() {
    let (client, ns) = ControlPlane::namespace("owner_gc").await;
    let maps = Api::<ConfigMap>::namespaced(client, &ns);
    let owner = maps
        .create(&PostParams::default(), &config_map("owner", &[]))
        .await
        .unwrap();
    let mut owned = config_map("owned", &[("a", "b")]);
    owned.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        name: "owner".to_string(),
        uid: owner.metadata.uid.clone().unwrap(),
        ..OwnerReference::default()
    }]);
    maps.create(&PostParams::default(), &owned).await.unwrap();
    let bystander = maps
        .create(&PostParams::default(), &config_map("bystander", &[]))
        .await
        .unwrap();
    assert!(bystander.metadata.owner_references.is_none());

    maps.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    // The garbage collector works asynchronously (and first syncs its informers).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while maps.get_opt("owned").await.unwrap().is_some() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "owned ConfigMap still exists 90 s after its owner was deleted; see {}",
            ControlPlane::dir()
                .join("kube-controller-manager.log")
                .display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        maps.get_opt("bystander").await.unwrap().is_some(),
        "the collector removed an object nobody owned"
    );
}

#[tokio::test]
async fn rbac_refuses_a_service_account_without_roles() {
    let (client, ns) = ControlPlane::namespace("rbac_refuses").await;
    let unprivileged = ControlPlane::account_client(&client, &ns, "default").await;
    let maps = Api::<ConfigMap>::namespaced(unprivileged, &ns);
    let refused = maps.list(&Default::default()).await.unwrap_err();
    match refused {
        kube::Error::Api(status) => assert_eq!(status.code, 403, "{status:?}"),
        other => panic!("expected 403 Forbidden, got {other}"),
    }
}
