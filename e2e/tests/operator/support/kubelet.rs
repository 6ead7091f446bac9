//! The kubelet's part, played by the tests: no kubelet runs in the harness, so a pod that
//! should have run gets the status a kubelet would write, and the real Job controller
//! completes or fails its Job from there.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use larder_operator::crd::BinaryCache;

use super::{children, condition, eventually, get, WAIT};

/// Plays the kubelet for every pod the Job controller made for `job`: the `larder` container
/// exits with `exit_code` after writing `message` to its termination log. The real Job
/// controller then counts the pod and completes or fails the Job.
pub async fn finish_pods_of_job(
    client: &Client,
    namespace: &str,
    job: &str,
    exit_code: i32,
    message: &str,
) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let found = eventually(&format!("a pod of Job {job}"), WAIT, async || {
        let list = pods
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| e.to_string())?;
        (!list.items.is_empty())
            .then_some(list.items)
            .ok_or_else(|| "no pods yet".to_string())
    })
    .await;
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    for pod in found {
        let image = pod.spec.as_ref().unwrap().containers[0].image.clone();
        let status = serde_json::json!({
            "status": {
                "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
                "startTime": now,
                "containerStatuses": [{
                    "name": "larder",
                    "image": image,
                    "imageID": "",
                    "ready": false,
                    "restartCount": 0,
                    "state": {"terminated": {
                        "exitCode": exit_code,
                        "reason": if exit_code == 0 { "Completed" } else { "Error" },
                        "message": message,
                        "startedAt": now,
                        "finishedAt": now,
                    }},
                }],
            }
        });
        pods.patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap_or_else(|e| panic!("set status of pod {}: {e}", pod.name_any()));
    }
}

/// Brings a new cache through its first migration: waits for the migration Job, lets its pod
/// succeed, and waits until the cache records the migrated image.
pub async fn migrate(client: &Client, namespace: &str, cache: &str) -> BinaryCache {
    let job = migration_job(client, namespace, cache, None).await;
    finish_pods_of_job(client, namespace, &job, 0, "").await;
    eventually(&format!("{cache} migrated"), WAIT, async || {
        let c = get::<BinaryCache>(client, namespace, cache)
            .await
            .ok_or("no cache")?;
        match c.status.as_ref().and_then(|s| s.migrated_image.clone()) {
            Some(_) => Ok(c),
            None => Err(format!("{:?}", condition(&c, "Progressing"))),
        }
    })
    .await
}

/// Waits for a migration Job of `cache` other than `not` and returns its name.
pub async fn migration_job(
    client: &Client,
    namespace: &str,
    cache: &str,
    not: Option<&str>,
) -> String {
    eventually(&format!("a migration Job of {cache}"), WAIT, async || {
        let jobs = children::<Job>(client, namespace, cache).await;
        jobs.into_iter()
            .find(|j| j.starts_with(&format!("{cache}-migrate-")) && Some(j.as_str()) != not)
            .ok_or_else(|| "none".to_string())
    })
    .await
}
