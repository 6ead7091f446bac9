//! A migration Job's pod cannot change once made: a spec change that changes the pod while a
//! migration waits (the usual fix for a pod that cannot be scheduled) gets a new Job instead
//! of an apply the API server refuses on every reconcile, and the Job it supersedes is
//! deleted (only that one: never a Job of another cache or one made by someone else). A
//! failed migration is reported by one Warning, not one per reconcile.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Patch, PatchParams};
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, condition, create, database_secret, events_about, eventually, finish_pods_of_job, get,
    install_crds, migration_job, minimal_cache, yaml, Operator, WAIT,
};

fn node_selector_of_job(job: &Job) -> Option<String> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    pod.node_selector.as_ref()?.get("pool").cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_change_during_a_migration_gets_a_new_job() {
    let (client, ns) = ControlPlane::namespace("operator-migration").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;
    let first = migration_job(&client, &ns, "main", None).await;

    // Its pod would wait for a node forever: send it to the pool meant for it.
    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"workers": {"nodeSelector": {"pool": "db"}}}});
    caches
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let second = migration_job(&client, &ns, "main", Some(&first)).await;
    let job: Job = get(&client, &ns, &second).await.unwrap();
    assert_eq!(node_selector_of_job(&job).as_deref(), Some("db"));
    eventually("the new generation is reported", WAIT, async || {
        let c: BinaryCache = get(&client, &ns, "main").await.ok_or("gone")?;
        let current =
            c.status.as_ref().and_then(|s| s.observed_generation) == c.metadata.generation;
        let progressing = condition(&c, "Progressing");
        match &progressing {
            Some((_, reason, message))
                if current && reason == "MigrationRunning" && message.contains(&second) =>
            {
                Ok(())
            }
            _ => Err(format!("{progressing:?}, current: {current}")),
        }
    })
    .await;

    finish_pods_of_job(&client, &ns, &second, 0, "").await;
    let workers: Deployment = appears(&client, &ns, "main").await;
    let pod = workers.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.node_selector.unwrap()["pool"], "db");
}

/// A Job labelled as a migration of cache `main`, controlled by `owner` (kind, name, uid) or
/// by nothing.
fn lookalike_job(name: &str, owner: Option<(&str, &str, &str)>) -> Job {
    let owner = owner.map_or(String::new(), |(kind, owner, uid)| {
        format!(
            "ownerReferences: [{{apiVersion: larder.dev/v1alpha1, kind: {kind}, name: {owner}, \
             uid: {uid}, controller: true}}]"
        )
    });
    yaml(&format!(
        r#"
apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  labels:
    app.kubernetes.io/name: larder
    app.kubernetes.io/instance: main
    app.kubernetes.io/component: migrate
    app.kubernetes.io/managed-by: larder-operator
  {owner}
spec:
  template:
    spec:
      restartPolicy: Never
      containers: [{{name: larder, image: "larder:other"}}]
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_migration_job_is_deleted_and_nothing_else() {
    let (client, ns) = ControlPlane::namespace("operator-superseded").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let other = create(&client, &ns, &minimal_cache("other")).await;
    create(&client, &ns, &minimal_cache("main")).await;
    let first = migration_job(&client, &ns, "main", None).await;
    let others = migration_job(&client, &ns, "other", None).await;
    // Jobs that look like migrations of main but are not its own.
    let other_uid = other.metadata.uid.clone().unwrap();
    let owned_by_other = ("BinaryCache", "other", other_uid.as_str());
    create(
        &client,
        &ns,
        &lookalike_job("lookalike-of-other", Some(owned_by_other)),
    )
    .await;
    create(&client, &ns, &lookalike_job("lookalike-unowned", None)).await;

    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"workers": {"image": "larder:e2e-2"}}});
    caches
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    let second = migration_job(&client, &ns, "main", Some(&first)).await;
    eventually(
        "the superseded Job is deleted",
        WAIT,
        async || match get::<Job>(&client, &ns, &first).await {
            None => Ok(()),
            Some(job) => Err(format!(
                "still there: {:?}",
                job.metadata.deletion_timestamp
            )),
        },
    )
    .await;
    // Its replacement, the other cache's Job and the lookalikes stay.
    for name in [&second, &others, "lookalike-of-other", "lookalike-unowned"] {
        let job: Option<Job> = get(&client, &ns, name).await;
        assert!(
            job.is_some_and(|j| j.metadata.deletion_timestamp.is_none()),
            "{name} was deleted"
        );
    }
}

/// Members of the `MigrationFailed` Events about `cache` (the recorder folds repeats into a
/// series, so count its members).
async fn migration_failed_events(client: &kube::Client, ns: &str, cache: &str) -> i32 {
    events_about(client, ns, cache)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("MigrationFailed"))
        .map(|e| e.series.map_or(1, |s| s.count))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_migration_is_reported_once() {
    let (client, ns) = ControlPlane::namespace("operator-migration-failed").await;
    install_crds(&client).await;
    let operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;
    let job = migration_job(&client, &ns, "main", None).await;

    // Fail the Job the quick way: a deadline already past. The operator is away meanwhile,
    // since its next apply would set the deadline back.
    operator.kill();
    let jobs = Api::<Job>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"activeDeadlineSeconds": 1}});
    jobs.patch(&job, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    eventually("the Job fails", WAIT, async || {
        let j: Job = get(&client, &ns, &job).await.ok_or("gone")?;
        let conditions = j.status.and_then(|s| s.conditions).unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "Failed" && c.status == "True")
            .then_some(())
            .ok_or_else(|| format!("{conditions:?}"))
    })
    .await;

    let operator = Operator::start(&client, &ns);
    eventually("the cache reports the failure", WAIT, async || {
        let c: BinaryCache = get(&client, &ns, "main").await.ok_or("gone")?;
        match condition(&c, "Degraded") {
            Some((_, reason, message)) if reason == "MigrationFailed" && message.contains(&job) => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    eventually("one Warning", WAIT, async || {
        let n = migration_failed_events(&client, &ns, "main").await;
        (n == 1).then_some(()).ok_or_else(|| format!("{n}"))
    })
    .await;

    // More reconciles of the same failure post nothing more.
    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    for n in 0..3 {
        // An annotation is no spec change, but it is an event that runs a reconcile; one at
        // a time, since the controller folds requests queued together into one.
        let reconciles = operator.reconciles("BinaryCache");
        let poke = serde_json::json!({"metadata": {"annotations": {"e2e/poke": n.to_string()}}});
        caches
            .patch("main", &PatchParams::default(), &Patch::Merge(poke))
            .await
            .unwrap();
        eventually("another reconcile", WAIT, async || {
            let now = operator.reconciles("BinaryCache");
            (now > reconciles)
                .then_some(())
                .ok_or_else(|| format!("{now} after {reconciles}"))
        })
        .await;
    }
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(migration_failed_events(&client, &ns, "main").await, 1);
}
