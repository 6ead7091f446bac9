//! Turning autoscaling on keeps the running worker count: the operator stops setting replicas
//! without the API server resetting them to one, and a cache that sets no resources may
//! autoscale, since every pod requests CPU by default.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use kube::api::{Patch, PatchParams};
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::build::resources::DEFAULT_CPU_REQUEST;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, create, database_secret, eventually, get, install_crds, migrate, minimal_cache,
    Operator, WAIT,
};

async fn replicas(client: &kube::Client, ns: &str) -> Option<i32> {
    let d: Deployment = get(client, ns, "main").await?;
    d.spec?.replicas
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_autoscaling_on_keeps_the_worker_count() {
    let (client, ns) = ControlPlane::namespace("operator-autoscale").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    let mut cache = minimal_cache("main");
    cache.spec.workers.replicas = 4;
    create(&client, &ns, &cache).await;
    migrate(&client, &ns, "main").await;
    appears::<Deployment>(&client, &ns, "main").await;
    assert_eq!(replicas(&client, &ns).await, Some(4));

    // Four workers lie within the bounds, so the autoscaler (which has no metrics here) has
    // no reason to change the count either.
    let patch = serde_json::json!({"spec": {"workers": {
        "autoscaling": {"minReplicas": 2, "maxReplicas": 8},
    }}});
    Api::<BinaryCache>::namespaced(client.clone(), &ns)
        .patch("main", &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
    appears::<HorizontalPodAutoscaler>(&client, &ns, "main").await;
    eventually(
        "the operator applied the new generation",
        WAIT,
        async || {
            let c: BinaryCache = get(&client, &ns, "main").await.ok_or("gone")?;
            let observed = c.status.as_ref().and_then(|s| s.observed_generation);
            (observed == c.metadata.generation)
                .then_some(())
                .ok_or_else(|| format!("observed {observed:?}"))
        },
    )
    .await;
    // Give a reset (to one, then the autoscaler's minimum) time to show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(replicas(&client, &ns).await, Some(4));

    // The spec sets no resources: the autoscaler aims at a share of the default request.
    let workers: Deployment = get(&client, &ns, "main").await.unwrap();
    let pod = workers.spec.unwrap().template.spec.unwrap();
    let requests = pod.containers[0]
        .resources
        .clone()
        .unwrap()
        .requests
        .unwrap();
    assert_eq!(requests["cpu"].0, DEFAULT_CPU_REQUEST);
}
