//! A BinaryCache becomes its children, follows spec changes, and takes them along when deleted.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, children, create, database_secret, events_about, eventually, finish_pods_of_job, get,
    install_crds, migrate, migration_job, ready_reason, secret, yaml, Operator, IMAGE, WAIT,
};

/// A cache asking for every optional child: static S3 keys, tokens, autoscaling, an ingress.
fn full_cache() -> BinaryCache {
    yaml(
        r#"
apiVersion: larder.dev/v1alpha1
kind: BinaryCache
metadata:
  name: web
spec:
  storage:
    bucket: nix-cache
    region: garage
    endpoint: http://garage.invalid:3900
    forcePathStyle: true
    prefix: team/web
    credentials:
      secret: {name: s3-keys}
  database:
    urlSecret: {name: larder-db, key: url}
  pushTokens:
    secretName: push-tokens
  workers:
    autoscaling: {minReplicas: 2, maxReplicas: 5}
  ingress:
    host: cache.example.org
  index:
    schedule: "0 * * * *"
"#,
    )
}

async fn full_cache_secrets(client: &Client, ns: &str) {
    database_secret(client, ns).await;
    secret(
        client,
        ns,
        "s3-keys",
        &[
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
        ],
    )
    .await;
    let tokens = "0123456789abcdef0123 push,read ci\n";
    secret(client, ns, "push-tokens", &[("tokens", tokens)]).await;
}

/// Asserts `meta` is controlled by `cache` and written by the operator's field manager.
fn assert_owned(kind: &str, meta: &ObjectMeta, cache: &BinaryCache) {
    let name = meta.name.as_deref().unwrap_or_default();
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    assert_eq!(owners.len(), 1, "{kind} {name}: {owners:?}");
    let owner = &owners[0];
    assert_eq!(
        (
            owner.kind.as_str(),
            owner.api_version.as_str(),
            owner.name.as_str()
        ),
        (
            "BinaryCache",
            "larder.dev/v1alpha1",
            cache.name_any().as_str()
        ),
        "{kind} {name}"
    );
    assert_eq!(
        Some(&owner.uid),
        cache.metadata.uid.as_ref(),
        "{kind} {name}"
    );
    assert_eq!(owner.controller, Some(true), "{kind} {name}");
    let managers: Vec<_> = meta
        .managed_fields
        .iter()
        .flatten()
        .map(|m| (m.manager.clone(), m.operation.clone()))
        .collect();
    assert!(
        managers.contains(&(
            Some("larder-operator".to_string()),
            Some("Apply".to_string())
        )),
        "{kind} {name} applied by the operator's field manager: {managers:?}"
    );
}

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
async fn a_cache_yields_every_child_owned_by_it() {
    let (client, ns) = ControlPlane::namespace("operator-children").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    full_cache_secrets(&client, &ns).await;
    let cache = create(&client, &ns, &full_cache()).await;

    // Before the database is migrated there are no workers, only what they will need.
    let job = migration_job(&client, &ns, "web", None).await;
    assert_eq!(
        children::<Deployment>(&client, &ns, "web").await,
        Vec::<String>::new()
    );
    let first = ready_reason(&client, &ns, "web", "NoWorkers").await;
    let progressing = crate::support::condition(&first, "Progressing").unwrap();
    assert_eq!(progressing.1, "MigrationRunning", "{progressing:?}");
    assert!(progressing.2.contains(&job), "{progressing:?}");

    let migrated = migrate(&client, &ns, "web").await;
    assert_eq!(
        migrated.status.as_ref().unwrap().migrated_image.as_deref(),
        Some(IMAGE)
    );
    let deployment: Deployment = appears(&client, &ns, "web").await;
    let index: CronJob = appears(&client, &ns, "web-index").await;

    let sa: ServiceAccount = get(&client, &ns, "web").await.unwrap();
    let cm: ConfigMap = get(&client, &ns, "web-config").await.unwrap();
    let svc: Service = get(&client, &ns, "web").await.unwrap();
    let pdb: PodDisruptionBudget = get(&client, &ns, "web").await.unwrap();
    let hpa: HorizontalPodAutoscaler = get(&client, &ns, "web").await.unwrap();
    let ingress: Ingress = get(&client, &ns, "web").await.unwrap();
    let migration: Job = get(&client, &ns, &job).await.unwrap();
    for (kind, meta) in [
        ("ServiceAccount", &sa.metadata),
        ("ConfigMap", &cm.metadata),
        ("Service", &svc.metadata),
        ("Deployment", &deployment.metadata),
        ("PodDisruptionBudget", &pdb.metadata),
        ("HorizontalPodAutoscaler", &hpa.metadata),
        ("Ingress", &ingress.metadata),
        ("CronJob", &index.metadata),
        ("Job", &migration.metadata),
    ] {
        assert_owned(kind, meta, &cache);
    }

    // The worker contract: what `larder serve --help` reads.
    let env = cm.data.unwrap();
    assert_eq!(env["LARDER_STORAGE"], "s3://nix-cache/team/web");
    assert_eq!(env["LARDER_S3_ENDPOINT"], "http://garage.invalid:3900");
    assert_eq!(env["LARDER_S3_PATH_STYLE"], "true");
    assert_eq!(env["LARDER_S3_REGION"], "garage");
    assert_eq!(env["LARDER_LISTEN"], "0.0.0.0:5050");
    assert_eq!(env["LARDER_PUBLIC_URL"], "http://cache.example.org");
    assert_eq!(env["LARDER_TOKEN_FILE"], "/etc/larder/tokens/tokens");

    let pod = pod_spec_of(&deployment);
    let worker = &pod.containers[0];
    assert_eq!(worker.image.as_deref(), Some(IMAGE));
    assert_eq!(worker.args.as_deref(), Some(&["serve".to_string()][..]));
    assert_eq!(worker.ports.as_ref().unwrap()[0].container_port, 5050);
    assert_eq!(pod.service_account_name.as_deref(), Some("web"));
    let secret_env: BTreeMap<_, _> = worker
        .env
        .iter()
        .flatten()
        .map(|e| {
            let r = e
                .value_from
                .as_ref()
                .unwrap()
                .secret_key_ref
                .as_ref()
                .unwrap();
            (e.name.clone(), (r.name.clone(), r.key.clone()))
        })
        .collect();
    assert_eq!(
        secret_env["LARDER_DATABASE_URL"],
        ("larder-db".into(), "url".into())
    );
    assert_eq!(
        secret_env["LARDER_S3_ACCESS_KEY_ID"],
        ("s3-keys".into(), "AWS_ACCESS_KEY_ID".into())
    );
    let hardening = worker.security_context.as_ref().unwrap();
    assert_eq!(hardening.read_only_root_filesystem, Some(true));
    assert_eq!(hardening.allow_privilege_escalation, Some(false));
    let volumes: BTreeMap<_, _> = pod
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| Some((v.name.clone(), v.secret.as_ref()?.secret_name.clone()?)))
        .collect();
    assert_eq!(volumes["signing-key"], "web-signing-key");
    assert_eq!(volumes["tokens"], "push-tokens");
    // With an autoscaler the replica count is left to it: the operator does not manage it.
    let applied = deployment.metadata.managed_fields.iter().flatten();
    let applied = applied
        .filter(|m| m.manager.as_deref() == Some("larder-operator"))
        .map(|m| serde_json::to_value(&m.fields_v1).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(applied.len(), 1, "{applied:?}");
    assert!(
        applied[0]["f:spec"].get("f:strategy").is_some(),
        "{applied:?}"
    );
    assert!(
        applied[0]["f:spec"].get("f:replicas").is_none(),
        "{applied:?}"
    );
    assert_eq!(hpa.spec.as_ref().unwrap().max_replicas, 5);

    let selector = svc.spec.as_ref().unwrap().selector.clone().unwrap();
    let pod_labels = deployment.spec.as_ref().unwrap().template.metadata.as_ref();
    let pod_labels = pod_labels.unwrap().labels.clone().unwrap();
    assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)));
    let index_pod = index
        .spec
        .unwrap()
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap();
    assert_eq!(
        index_pod.containers[0].args.as_deref(),
        Some(&["index".to_string(), "build".to_string()][..])
    );
    let migrate_pod = migration.spec.unwrap().template.spec.unwrap();
    assert_eq!(
        migrate_pod.containers[0].args.as_deref(),
        Some(&["migrate".to_string()][..])
    );

    // No kubelet: the Deployment controller made pods that never become ready.
    let status = ready_reason(&client, &ns, "web", "WorkersNotReady").await;
    let status = status.status.unwrap();
    assert_eq!(status.url.as_deref(), Some("http://cache.example.org"));
    assert!(status
        .public_key
        .unwrap()
        .starts_with("cache.example.org-1:"));

    let reasons: Vec<_> = events_about(&client, &ns, "web")
        .await
        .into_iter()
        .filter_map(|e| Some((e.reason?, e.note?)))
        .collect();
    for expected in ["Created Deployment web", "Created ConfigMap web-config"] {
        assert!(
            reasons.iter().any(|(r, n)| r == "Created" && n == expected),
            "no event {expected:?} in {reasons:?}"
        );
    }
    assert!(
        reasons.iter().any(|(r, _)| r == "SigningKeyGenerated"),
        "{reasons:?}"
    );
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
    let cache: BinaryCache = get(&client, &ns, "main").await.unwrap();
    assert_eq!(
        cache.status.unwrap().migrated_image.as_deref(),
        Some(new_image)
    );

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cache_removes_its_children_and_keeps_its_signing_key() {
    let (client, ns) = ControlPlane::namespace("operator-delete").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &crate::support::minimal_cache("gone")).await;
    migrate(&client, &ns, "gone").await;
    appears::<Deployment>(&client, &ns, "gone").await;
    appears::<CronJob>(&client, &ns, "gone-index").await;

    Api::<BinaryCache>::namespaced(client.clone(), &ns)
        .delete("gone", &DeleteParams::background())
        .await
        .unwrap();
    // kube-controller-manager's garbage collector follows the owner references; it learns
    // about a new CRD's resources on its discovery resync, so give it more than WAIT.
    eventually("children collected", Duration::from_secs(90), async || {
        let left = [
            children::<ServiceAccount>(&client, &ns, "gone").await,
            children::<ConfigMap>(&client, &ns, "gone").await,
            children::<Service>(&client, &ns, "gone").await,
            children::<Deployment>(&client, &ns, "gone").await,
            children::<PodDisruptionBudget>(&client, &ns, "gone").await,
            children::<CronJob>(&client, &ns, "gone").await,
            children::<Job>(&client, &ns, "gone").await,
        ]
        .concat();
        left.is_empty()
            .then_some(())
            .ok_or_else(|| format!("{left:?}"))
    })
    .await;
    // Losing the key would break every client's trust in the cache: it stays.
    assert_eq!(
        children::<Secret>(&client, &ns, "gone").await,
        ["gone-signing-key"]
    );
}
