//! What `spec.suspend` still changes: the schedules. A suspended cache's children are left
//! as they are, except that its index CronJob stops starting builds (docs/operator.md says
//! why: people suspend a cache to work on its bucket or database by hand).

use k8s_openapi::api::batch::v1::CronJob;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};

use super::apply::controller_of;
use super::Error;

/// Field manager of the one field a suspended cache's CronJob gets. Not the operator's own
/// manager: an apply under it would have to carry the whole object, or drop what it omits.
/// Resuming applies the whole CronJob under the operator's manager again, which takes the
/// field back (force).
const SUSPEND_MANAGER: &str = "larder-operator-suspend";

/// Sets `suspend: true` on the CronJob `name` when `owner_uid` controls it and it is not
/// suspended yet; says whether it changed it. Nothing else of the CronJob changes.
pub async fn suspend_cronjob(
    client: &Client,
    namespace: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, Error> {
    let api: Api<CronJob> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("read", "CronJob", name, e))?
    else {
        return Ok(false);
    };
    let ours = controller_of(&existing.metadata).is_some_and(|c| c.uid == owner_uid);
    let suspended = existing.spec.as_ref().and_then(|s| s.suspend) == Some(true);
    if !ours || suspended {
        return Ok(false);
    }
    let patch = serde_json::json!({
        "apiVersion": CronJob::api_version(&()),
        "kind": CronJob::kind(&()),
        "metadata": {"name": name},
        "spec": {"suspend": true},
    });
    // `force`: the operator's own manager owns the field (as false) until now.
    api.patch(
        name,
        &PatchParams::apply(SUSPEND_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube("suspend", "CronJob", name, e))?;
    Ok(true)
}
