//! A BinaryCache becomes every child it asks for, each controlled by it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Client, ResourceExt};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, children, create, database_secret, events_about, get, install_crds, migrate,
    migration_job, ready_reason, secret, yaml, Operator, IMAGE,
};

/// A cache asking for every optional child: static S3 keys, tokens, autoscaling, an ingress.
pub(crate) fn full_cache() -> BinaryCache {
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
    resources: {requests: {cpu: 100m}}
  ingress:
    host: cache.example.org
  index:
    schedule: "0 * * * *"
"#,
    )
}

pub(crate) async fn full_cache_secrets(client: &Client, ns: &str) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_yields_every_child_owned_by_it() {
    let (client, ns) = ControlPlane::namespace("operator-children").await;
    install_crds(&client).await;
    let operator = Operator::start(&client, &ns);
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

    // Reconciling an unchanged cache changes nothing, so it publishes nothing: applies that
    // are not idempotent would post an Updated Event for every child on every resync (the
    // recorder folds repeats into a series, so count its members).
    let updated = |events: Vec<k8s_openapi::api::events::v1::Event>| -> i32 {
        events
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Updated"))
            .map(|e| e.series.map_or(1, |s| s.count))
            .sum()
    };
    let before = updated(events_about(&client, &ns, "web").await);
    let reconciles = operator.reconciles("BinaryCache");
    let caches = kube::Api::<BinaryCache>::namespaced(client.clone(), &ns);
    for n in 0..2 {
        // An annotation is no spec change, but it is an event that runs a reconcile.
        let poke = serde_json::json!({"metadata": {"annotations": {"e2e/poke": n.to_string()}}});
        caches
            .patch(
                "web",
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(poke),
            )
            .await
            .unwrap();
    }
    crate::support::eventually("two more reconciles", crate::support::WAIT, async || {
        let now = operator.reconciles("BinaryCache");
        (now >= reconciles + 2)
            .then_some(())
            .ok_or_else(|| format!("{now} after {reconciles}"))
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let after = updated(events_about(&client, &ns, "web").await);
    assert_eq!(
        before, after,
        "Updated Events from reconciles that changed nothing"
    );
}
