//! Caches the operator cannot serve: reported as `Ready=False` with a reason, no children, no
//! hot loop; and healed by the change that fixes them.

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, children, condition, create, database_secret, events_about, install_crds,
    minimal_cache, ready_reason, secret, Operator,
};

/// Every child kind a cache makes before its migration, plus its signing key.
async fn all_children(client: &Client, ns: &str, cache: &str) -> Vec<String> {
    [
        children::<ServiceAccount>(client, ns, cache).await,
        children::<ConfigMap>(client, ns, cache).await,
        children::<Service>(client, ns, cache).await,
        children::<Job>(client, ns, cache).await,
        children::<Secret>(client, ns, cache).await,
    ]
    .concat()
}

/// Asserts the operator does not reconcile `kind` at all during `window`.
async fn assert_quiet(operator: &Operator, window: Duration) {
    // The status write itself triggers one more (idempotent) reconcile; let it pass first.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = operator.reconciles("BinaryCache");
    tokio::time::sleep(window).await;
    let after = operator.reconciles("BinaryCache");
    assert_eq!(
        before, after,
        "the operator kept reconciling an object that did not change"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_cache_is_not_ready_has_no_children_and_does_not_loop() {
    let (client, ns) = ControlPlane::namespace("operator-invalid").await;
    install_crds(&client).await;
    let operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    // The schema accepts any URI; the workers serve only HTTP(S), which only the operator checks.
    let mut cache = minimal_cache("bad");
    cache.spec.url = Some("ftp://cache.example.org".into());
    create(&client, &ns, &cache).await;

    let invalid = ready_reason(&client, &ns, "bad", "InvalidSpec").await;
    let (status, _, message) = condition(&invalid, "Ready").unwrap();
    assert_eq!(status, "False");
    assert!(message.contains("spec.url"), "{message}");
    assert_eq!(condition(&invalid, "Degraded").unwrap().0, "True");
    assert_quiet(&operator, Duration::from_secs(3)).await;
    assert!(
        operator.reconciles("BinaryCache") <= 3,
        "{} reconciles for one invalid object",
        operator.reconciles("BinaryCache")
    );
    assert_eq!(
        all_children(&client, &ns, "bad").await,
        Vec::<String>::new()
    );
    let warnings: Vec<_> = events_about(&client, &ns, "bad")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].0, "InvalidSpec");

    // Fixing the spec is the change that heals it.
    let fix = serde_json::json!({"spec": {"url": "https://cache.example.org"}});
    Api::<BinaryCache>::namespaced(client.clone(), &ns)
        .patch("bad", &PatchParams::default(), &Patch::Merge(&fix))
        .await
        .unwrap();
    let healed = ready_reason(&client, &ns, "bad", "NoWorkers").await;
    assert_eq!(condition(&healed, "Degraded").unwrap().0, "False");
    appears::<ConfigMap>(&client, &ns, "bad-config").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_secret_is_reported_until_it_appears() {
    let (client, ns) = ControlPlane::namespace("operator-missing-secret").await;
    install_crds(&client).await;
    let operator = Operator::start(&client, &ns);
    create(&client, &ns, &minimal_cache("main")).await;

    let missing = ready_reason(&client, &ns, "main", "SecretNotFound").await;
    let message = condition(&missing, "Ready").unwrap().2;
    assert_eq!(message, "Secret larder-db (database URL) not found");
    assert_quiet(&operator, Duration::from_secs(2)).await;
    assert_eq!(
        all_children(&client, &ns, "main").await,
        Vec::<String>::new()
    );

    // The Secret appears without the key the cache names: a different, equally clear reason.
    secret(
        &client,
        &ns,
        "larder-db",
        &[("uri", "postgres://db.invalid/larder")],
    )
    .await;
    let wrong_key = ready_reason(&client, &ns, "main", "SecretKeyMissing").await;
    let message = condition(&wrong_key, "Ready").unwrap().2;
    assert!(
        message.contains("larder-db") && message.contains("\"url\""),
        "{message}"
    );

    // The operator watches referenced Secrets: adding the key heals the cache well before the
    // 60 s it would otherwise wait to look again.
    let started = tokio::time::Instant::now();
    let url = serde_json::json!({"stringData": {"url": "postgres://db.invalid/larder"}});
    Api::<Secret>::namespaced(client.clone(), &ns)
        .patch("larder-db", &PatchParams::default(), &Patch::Merge(&url))
        .await
        .unwrap();
    ready_reason(&client, &ns, "main", "NoWorkers").await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    appears::<ConfigMap>(&client, &ns, "main-config").await;
    appears::<Secret>(&client, &ns, "main-signing-key").await;
}
