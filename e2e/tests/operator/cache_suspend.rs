//! A suspended cache keeps its children as they are, except that its schedules stop: the
//! index CronJob and its GC policies' CronJobs are suspended, and resume with the cache.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::gc_policy::{policy, policy_becomes};
use crate::support::{
    appears, create, database_secret, eventually, get, install_crds, migrate, minimal_cache,
    ready_reason, Operator, WAIT,
};

async fn suspended(client: &Client, ns: &str, cronjob: &str) -> Option<bool> {
    let cj: CronJob = get(client, ns, cronjob).await?;
    cj.spec?.suspend
}

async fn both_suspended(client: &Client, ns: &str, want: bool) {
    eventually(
        &format!("both CronJobs suspend: {want}"),
        WAIT,
        async || {
            let seen = (
                suspended(client, ns, "main-index").await,
                suspended(client, ns, "nightly-gc").await,
            );
            (seen == (Some(want), Some(want)))
                .then_some(())
                .ok_or_else(|| format!("{seen:?}"))
        },
    )
    .await;
}

async fn replicas(client: &Client, ns: &str) -> Option<i32> {
    let d: Deployment = get(client, ns, "main").await?;
    d.spec?.replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspending_a_cache_stops_its_schedules_and_nothing_else() {
    let (client, ns) = ControlPlane::namespace("operator-suspend").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("main")).await;
    migrate(&client, &ns, "main").await;
    appears::<Deployment>(&client, &ns, "main").await;
    appears::<CronJob>(&client, &ns, "main-index").await;
    create(&client, &ns, &policy()).await;
    appears::<CronJob>(&client, &ns, "nightly-gc").await;
    both_suspended(&client, &ns, false).await;
    assert_eq!(replicas(&client, &ns).await, Some(2));

    // Suspend, and change the spec in the same edit: the change waits for the resume.
    let caches = Api::<BinaryCache>::namespaced(client.clone(), &ns);
    let patch = serde_json::json!({"spec": {"suspend": true, "workers": {"replicas": 5}}});
    caches
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    ready_reason(&client, &ns, "main", "Suspended").await;
    both_suspended(&client, &ns, true).await;
    policy_becomes(&client, &ns, "nightly", "True/Suspended").await;
    let index: CronJob = get(&client, &ns, "main-index").await.unwrap();
    assert_eq!(index.spec.unwrap().schedule, "*/15 * * * *");
    assert_eq!(replicas(&client, &ns).await, Some(2));

    let patch = serde_json::json!({"spec": {"suspend": false}});
    caches
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    both_suspended(&client, &ns, false).await;
    policy_becomes(&client, &ns, "nightly", "True/Scheduled").await;
    eventually(
        "the change made while suspended is applied",
        WAIT,
        async || {
            let r = replicas(&client, &ns).await;
            (r == Some(5)).then_some(()).ok_or_else(|| format!("{r:?}"))
        },
    )
    .await;
}
