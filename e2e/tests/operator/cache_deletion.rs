//! Deleting a cache: kube-controller-manager's garbage collector takes the children along by
//! their owner references; the signing key stays.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::DeleteParams;
use kube::Api;
use larder_e2e::k8s::ControlPlane;
use larder_operator::crd::BinaryCache;

use crate::support::{
    appears, children, create, database_secret, eventually, install_crds, migrate, minimal_cache,
    Operator,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_cache_removes_its_children_and_keeps_its_signing_key() {
    let (client, ns) = ControlPlane::namespace("operator-delete").await;
    install_crds(&client).await;
    let _operator = Operator::start(&client, &ns);
    database_secret(&client, &ns).await;
    create(&client, &ns, &minimal_cache("gone")).await;
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
