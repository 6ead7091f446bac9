//! Two operator replicas against one API server: only the Lease holder writes; when it dies
//! the other takes over, and a replica that stops cleanly hands the Lease over at once.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;
use larder_operator::leader::Elector;

use crate::support::{
    create, database_secret, events_about, eventually, get, install_crds, minimal_cache,
    ready_reason, Operator, WAIT,
};

/// Short, so that a takeover after a crash fits in a test.
const LEASE: Duration = Duration::from_secs(4);

async fn holder(client: &Client, ns: &str) -> (Option<String>, i32) {
    let lease: Option<Lease> = get(client, ns, "larder-operator").await;
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    (spec.holder_identity, spec.lease_transitions.unwrap_or(0))
}

/// `reportingInstance` of every operator Event about `name`.
async fn reporters(client: &Client, ns: &str, name: &str) -> Vec<String> {
    events_about(client, ns, name)
        .await
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("larder-operator"))
        .filter_map(|e| e.reporting_instance)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_writes_and_the_follower_takes_over() {
    let (client, ns) = ControlPlane::namespace("operator-leader").await;
    install_crds(&client).await;
    database_secret(&client, &ns).await;
    let a = Operator::start_elected(&client, &ns, "replica-a", LEASE);
    eventually("replica-a leads", WAIT, async || {
        let (who, _) = holder(&client, &ns).await;
        (who.as_deref() == Some("replica-a"))
            .then_some(())
            .ok_or_else(|| format!("{who:?}"))
    })
    .await;
    let b = Operator::start_elected(&client, &ns, "replica-b", LEASE);

    create(&client, &ns, &minimal_cache("main")).await;
    ready_reason(&client, &ns, "main", "NoWorkers").await;
    // Give the follower several chances to (wrongly) act: it polls the Lease every LEASE / 5.
    tokio::time::sleep(LEASE).await;
    assert!(a.reconciles("BinaryCache") > 0);
    assert_eq!(b.reconciles("BinaryCache"), 0, "the follower reconciled");
    let written_by = reporters(&client, &ns, "main").await;
    assert!(!written_by.is_empty());
    assert!(
        written_by.iter().all(|r| r == "replica-a"),
        "{written_by:?}"
    );
    let (_, transitions) = holder(&client, &ns).await;

    // The leader dies without a word; the follower takes over once the Lease expires.
    a.kill();
    let change = serde_json::json!({"spec": {"priority": 11}});
    Api::<BinaryCache>::namespaced(client.clone(), &ns)
        .patch("main", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    eventually("the follower applies the change", WAIT, async || {
        let cm: ConfigMap = get(&client, &ns, "main-config").await.ok_or("gone")?;
        let priority = cm.data.unwrap_or_default().remove("LARDER_PRIORITY");
        (priority.as_deref() == Some("11"))
            .then_some(())
            .ok_or_else(|| format!("{priority:?}"))
    })
    .await;
    // Not before the dead leader's Lease ran out: nobody else may write during that time.
    assert!(started.elapsed() >= LEASE / 2, "{:?}", started.elapsed());
    // The counter moves when the reconcile ends, after the ConfigMap was applied.
    eventually("the follower counts its reconcile", WAIT, async || {
        (b.reconciles("BinaryCache") > 0)
            .then_some(())
            .ok_or_else(|| "no reconcile yet".to_string())
    })
    .await;
    let (who, after) = holder(&client, &ns).await;
    assert_eq!(who.as_deref(), Some("replica-b"));
    assert_eq!(after, transitions + 1);
    let written_by = reporters(&client, &ns, "main").await;
    assert!(
        written_by.iter().any(|r| r == "replica-b"),
        "{written_by:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_stops_hands_the_lease_over_at_once() {
    let (client, ns) = ControlPlane::namespace("operator-lease-release").await;
    // Long enough that waiting for expiry would show.
    let long = Duration::from_secs(300);
    let a = Elector::new(client.clone(), &ns, "larder-operator", "replica-a", long);
    let b = Elector::new(client.clone(), &ns, "larder-operator", "replica-b", long);
    let started = tokio::time::Instant::now();
    a.lead(async {
        assert!(!b.try_lead().await.unwrap(), "b led while a held the Lease");
    })
    .await
    .unwrap();
    assert_eq!(holder(&client, &ns).await.0, None);
    assert!(
        b.try_lead().await.unwrap(),
        "b could not take the released Lease"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}
