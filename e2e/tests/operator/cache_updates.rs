//! Spec changes reach the children: config rolls the workers, a new image waits for its
//! migration, removed options remove their objects, and the bucket cannot change.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Patch, PatchParams};
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, create, database_secret, eventually, finish_pods_of_job, get, install_crds, migrate,
    migration_job, Operator, IMAGE, WAIT,
};

fn pod_spec_of(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
}

fn checksum_of(deployment: &Deployment) -> String {
    let template = &deployment.spec.as_ref().unwrap().template;
    let annotations = template.metadata.as_ref().unwrap().annotations.as_ref();
    annotations.unwrap()["larder.dev/config-checksum"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_changes_update_children_and_roll_the_workers() {
    let (client, ns) = ControlPlane::namespace("operator-updates").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &crate::support::minimal_cache("main")).await;
    migrate(&client, &ns, "main").await;
    let before: Deployment = appears(&client, &ns, "main").await;
    assert_eq!(before.spec.as_ref().unwrap().replicas, Some(2));
    assert!(get::<PodDisruptionBudget>(&client, &ns, "main")
        .await
        .is_some());
    assert!(get::<Ingress>(&client, &ns, "main").await.is_none());
    let checksum = checksum_of(&before);

    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    let patch = |spec: serde_json::Value| serde_json::json!({ "spec": spec });
    caches
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(patch(serde_json::json!({
                "priority": 10,
                "workers": {"replicas": 1},
                "ingress": {"host": "nix.example.org"},
            }))),
        )
        .await
        .unwrap();

    // A config change reaches the ConfigMap and rolls the pods through the checksum.
    eventually("the Deployment follows the spec", WAIT, async || {
        let d: Deployment = get(&client, &ns, "main").await.ok_or("gone")?;
        let replicas = d.spec.as_ref().unwrap().replicas;
        (replicas == Some(1) && checksum_of(&d) != checksum)
            .then_some(())
            .ok_or_else(|| format!("replicas {replicas:?}"))
    })
    .await;
    let cm: ConfigMap = get(&client, &ns, "main-config").await.unwrap();
    let env = cm.data.unwrap();
    assert_eq!(env["LARDER_PRIORITY"], "10");
    assert_eq!(env["LARDER_PUBLIC_URL"], "http://nix.example.org");
    let ingress: Ingress = appears(&client, &ns, "main").await;
    assert_eq!(
        ingress.spec.unwrap().rules.unwrap()[0].host.as_deref(),
        Some("nix.example.org")
    );
    // One worker: a budget would block node drains, so it goes.
    eventually("the PodDisruptionBudget is removed", WAIT, async || {
        match get::<PodDisruptionBudget>(&client, &ns, "main").await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;

    // A new image rolls out only after its migration: meanwhile workers keep the old one.
    let first_job = migration_job(&client, &ns, "main", None).await;
    let new_image = "larder:e2e-2";
    caches
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(patch(serde_json::json!({
                "workers": {"image": new_image},
                "ingress": null,
            }))),
        )
        .await
        .unwrap();
    let second_job = migration_job(&client, &ns, "main", Some(&first_job)).await;
    let waiting = eventually("the new migration is reported", WAIT, async || {
        let c: BinaryCache = get(&client, &ns, "main").await.ok_or("gone")?;
        let progressing = crate::support::condition(&c, "Progressing");
        match &progressing {
            Some((_, reason, message)) if reason == "MigrationRunning" => Ok(message.clone()),
            _ => Err(format!("{progressing:?}")),
        }
    })
    .await;
    assert!(waiting.contains(new_image), "{waiting}");
    let during: Deployment = get(&client, &ns, "main").await.unwrap();
    assert_eq!(
        pod_spec_of(&during).containers[0].image.as_deref(),
        Some(IMAGE)
    );
    // Removing the ingress removes the Ingress, while the migration runs.
    eventually("the Ingress is removed", WAIT, async || {
        match get::<Ingress>(&client, &ns, "main").await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;

    finish_pods_of_job(&client, &ns, &second_job, 0, "").await;
    eventually("workers roll to the migrated image", WAIT, async || {
        let d: Deployment = get(&client, &ns, "main").await.ok_or("gone")?;
        let image = pod_spec_of(&d).containers[0].image.clone();
        (image.as_deref() == Some(new_image))
            .then_some(())
            .ok_or_else(|| format!("{image:?}"))
    })
    .await;
    // The status is written after the Deployment in the same reconcile: wait for it
    // rather than race it.
    eventually("the status records the migrated image", WAIT, async || {
        let cache: BinaryCache = get(&client, &ns, "main").await.ok_or("gone")?;
        let migrated = cache.status.and_then(|s| s.migrated_image);
        (migrated.as_deref() == Some(new_image))
            .then_some(())
            .ok_or_else(|| format!("{migrated:?}"))
    })
    .await;

    // The bucket is immutable: the API server refuses the change (CEL in the CRD).
    let refused = caches
        .patch(
            "main",
            &PatchParams::default(),
            &Patch::Merge(patch(
                serde_json::json!({"storage": {"bucket": "other-bucket"}}),
            )),
        )
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("bucket is immutable"),
        "{refused}"
    );
}
