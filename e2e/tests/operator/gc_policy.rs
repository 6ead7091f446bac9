//! A GCPolicy becomes a CronJob running `larder gc`, and its status follows the finished runs.
//!
//! No kubelet runs here, so the test plays its part: it starts a run from the CronJob's job
//! template as the CronJob controller would, and ends the run's pod with the summary line
//! `larder gc` writes to its termination log. The real Job controller completes the Job.

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::api::ObjectMeta;
use kube::{Client, Resource, ResourceExt};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::{GCPolicy, GcResult};

use crate::support::{
    appears, create, database_secret, events_about, eventually, finish_pods_of_job, get,
    install_crds, migrate, minimal_cache, row, table, yaml, Operator, IMAGE, WAIT,
};

/// A summary line exactly as `larder gc` prints it.
pub(crate) const SUMMARY: &str = r#"{"dry_run":false,"stale_sessions":2,"roots_expired":3,"objects_marked":41,"bytes_marked":2097152,"objects_deleted":40,"bytes_deleted":1048576,"failures":0,"duration_ms":1234}"#;

pub(crate) fn policy() -> GCPolicy {
    yaml(
        r#"
apiVersion: larder.dev/v1alpha1
kind: GCPolicy
metadata:
  name: nightly
spec:
  cacheRef: {name: main}
  schedule: "30 3 * * *"
  timeZone: Etc/UTC
  retention: 30d
  failedUploadGrace: 6h
"#,
    )
}

/// Starts a run of `cronjob` the way the CronJob controller does: a Job from its template,
/// controlled by the CronJob.
pub(crate) async fn start_run(client: &Client, ns: &str, cronjob: &CronJob, name: &str) -> Job {
    let template = cronjob.spec.as_ref().unwrap().job_template.clone();
    let meta = template.metadata.unwrap_or_default();
    let job = Job {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: meta.labels,
            owner_references: Some(vec![cronjob.controller_owner_ref(&()).unwrap()]),
            ..ObjectMeta::default()
        },
        spec: template.spec,
        ..Job::default()
    };
    create(client, ns, &job).await
}

pub(crate) fn policy_ready(policy: &GCPolicy) -> Option<String> {
    let conditions = &policy.status.as_ref()?.conditions;
    let ready = conditions.iter().find(|c| c.type_ == "Ready")?;
    Some(format!("{}/{}", ready.status, ready.reason))
}

/// Waits until policy `name`'s Ready condition reads `want` (`status/reason`).
pub(crate) async fn policy_becomes(client: &Client, ns: &str, name: &str, want: &str) {
    eventually(&format!("policy {name} is {want}"), WAIT, async || {
        let p: GCPolicy = get(client, ns, name).await.ok_or("gone")?;
        let ready = policy_ready(&p);
        (ready.as_deref() == Some(want))
            .then_some(())
            .ok_or_else(|| format!("{ready:?}"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gc_policy_yields_its_cronjob_and_reports_the_last_run() {
    let (client, ns) = ControlPlane::namespace("operator-gc").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;

    // Until the cache's database is migrated no image is known to be safe to collect with.
    let policy = create(&client, &ns, &policy()).await;
    policy_becomes(&client, &ns, "nightly", "False/CacheNotReady").await;
    assert!(get::<CronJob>(&client, &ns, "nightly-gc").await.is_none());

    // The cache finishing its migration wakes the policy (it watches caches).
    migrate(&client, &ns, "main").await;
    let cronjob: CronJob = appears(&client, &ns, "nightly-gc").await;
    let owner = &cronjob.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("GCPolicy", policy.uid().unwrap().as_str(), Some(true))
    );
    let spec = cronjob.spec.as_ref().unwrap();
    assert_eq!(spec.schedule, "30 3 * * *");
    assert_eq!(spec.time_zone.as_deref(), Some("Etc/UTC"));
    assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
    let pod = spec
        .job_template
        .spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap();
    let container = &pod.containers[0];
    assert_eq!(container.image.as_deref(), Some(IMAGE));
    assert_eq!(
        container.args.as_deref().unwrap(),
        [
            "gc",
            "--older-than",
            "30d",
            "--failed-uploads-older-than",
            "6h"
        ]
    );
    policy_becomes(&client, &ns, "nightly", "True/Scheduled").await;

    let run = start_run(&client, &ns, &cronjob, "nightly-gc-29000000").await;
    finish_pods_of_job(&client, &ns, &run.name_any(), 0, SUMMARY).await;
    let reported = eventually("the run is reported", WAIT, async || {
        let p: GCPolicy = get(&client, &ns, "nightly").await.ok_or("gone")?;
        let last = p.status.as_ref().and_then(|s| s.last_run.clone());
        match last {
            Some(run) if run.summary.is_some() => Ok(run),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert_eq!(reported.job_name, "nightly-gc-29000000");
    assert_eq!(reported.result, GcResult::Succeeded);
    assert!(reported.completion_time.is_some());
    let summary = reported.summary.unwrap();
    assert_eq!(
        (
            summary.objects_deleted,
            summary.bytes_deleted,
            summary.roots_expired,
            summary.stale_sessions,
            summary.duration_ms,
        ),
        (40, 1_048_576, 3, 2, 1234)
    );

    let cells = row(&table(&client, &ns, "gcpolicies").await, "nightly");
    assert_eq!(cells["Last Result"], "Succeeded");
    assert_eq!(cells["Cache"], "main");
    let notes: BTreeMap<_, _> = events_about(&client, &ns, "nightly")
        .await
        .into_iter()
        .filter_map(|e| Some((e.reason?, e.note?)))
        .collect();
    let note = notes
        .get("RunSucceeded")
        .unwrap_or_else(|| panic!("{notes:?}"));
    assert!(
        note.contains("nightly-gc-29000000") && note.contains("40 objects"),
        "{note}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_the_cronjob_refuses_is_reported_until_fixed() {
    let (client, ns) = ControlPlane::namespace("operator-gc-schedule").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;
    migrate(&client, &ns, "main").await;

    // Five fields pass the schema's pattern; minute 61 does not pass the CronJob's validation.
    let mut bad = policy();
    bad.spec.schedule = "61 3 * * *".into();
    create(&client, &ns, &bad).await;
    let refused = eventually("the refusal is reported", WAIT, async || {
        let p: GCPolicy = get(&client, &ns, "nightly").await.ok_or("gone")?;
        let ready = p
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready").cloned());
        match ready {
            Some(c) if c.reason == "ApplyFailed" => Ok(c.message),
            other => Err(format!("{other:?}")),
        }
    })
    .await;
    assert!(refused.contains("schedule"), "{refused}");
    assert!(get::<CronJob>(&client, &ns, "nightly-gc").await.is_none());
    // Retries (5 s, then 10 s apart) do not repeat the Warning.
    tokio::time::sleep(std::time::Duration::from_secs(7)).await;
    let warnings: Vec<_> = events_about(&client, &ns, "nightly")
        .await
        .into_iter()
        .filter(|e| e.type_.as_deref() == Some("Warning"))
        .map(|e| e.reason.unwrap_or_default())
        .collect();
    assert_eq!(warnings, ["ApplyFailed"]);

    let fix = serde_json::json!({"spec": {"schedule": "30 3 * * *"}});
    kube::Api::<GCPolicy>::namespaced(client.clone(), &ns)
        .patch(
            "nightly",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(fix),
        )
        .await
        .unwrap();
    appears::<CronJob>(&client, &ns, "nightly-gc").await;
    policy_becomes(&client, &ns, "nightly", "True/Scheduled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cache_removes_the_policys_cronjob() {
    let (client, ns) = ControlPlane::namespace("operator-gc-orphan").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;
    migrate(&client, &ns, "main").await;
    create(&client, &ns, &policy()).await;
    appears::<CronJob>(&client, &ns, "nightly-gc").await;

    // Runs would use the cache's ServiceAccount and ConfigMap, which go with the cache.
    kube::Api::<larder_operator::crd::BinaryCache>::namespaced(client.clone(), &ns)
        .delete("main", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually("the CronJob is removed", WAIT, async || {
        match get::<CronJob>(&client, &ns, "nightly-gc").await {
            None => Ok(()),
            Some(_) => Err("still there".to_string()),
        }
    })
    .await;
    // The CronJob goes before the status says why: wait for the status too.
    policy_becomes(&client, &ns, "nightly", "False/CacheNotFound").await;
}
