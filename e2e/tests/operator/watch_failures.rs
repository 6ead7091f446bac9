//! An operator that may not read what it watches (a ClusterRole missing a kind) says so in its
//! metrics and at warn level, instead of looking healthy while no change reaches it.

use larder_e2e::k8s::ControlPlane;

use crate::support::{eventually, install_crds, Operator, WAIT};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_without_rbac_counts_its_failed_watches() {
    let (client, ns) = ControlPlane::namespace("operator-no-rbac").await;
    install_crds(&client).await;
    // The namespace's default ServiceAccount: authenticated, bound to no role.
    let unprivileged = ControlPlane::account_client(&client, &ns, "default").await;

    let operator = Operator::start(&unprivileged, &ns);
    eventually("failed watches are counted", WAIT, async || {
        let caches = operator.metrics.watch_failure_count("BinaryCache");
        let policies = operator.metrics.watch_failure_count("GCPolicy");
        (caches > 0 && policies > 0)
            .then_some(())
            .ok_or_else(|| format!("BinaryCache {caches}, GCPolicy {policies}"))
    })
    .await;
    assert_eq!(operator.reconciles("BinaryCache"), 0);
}
