//! Applying a cache's children: two rounds of concurrent server-side applies.
//!
//! The first round makes what pods need before they can be created (their ServiceAccount,
//! whose absence makes the API server refuse a pod) and what serves them; the second makes
//! what creates pods. Within a round nothing depends on anything else, so the applies go
//! out side by side: a reconcile takes a few round trips instead of one per child.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::events::Note;
use super::{apply, Error};
use crate::build::children::CacheChildren;
use crate::build::{deployment, names, selector_labels, Component};

/// Applies every wanted child and removes unwanted optional ones (only those `owner_uid`
/// controls). Returns the Events to publish and the Deployment as stored, if wanted.
pub async fn apply_all(
    client: &Client,
    namespace: &str,
    cache: &str,
    owner_uid: &str,
    wanted: CacheChildren,
) -> Result<(Vec<Note>, Option<Deployment>), Error> {
    let workers = names::workers(cache);
    let index = names::index_cronjob(cache);
    let first = futures::try_join!(
        ensure(client, namespace, Some(&wanted.service_account)),
        ensure(client, namespace, Some(&wanted.config_map)),
        ensure(client, namespace, Some(&wanted.service)),
        ensure_or_remove::<PodDisruptionBudget>(
            client,
            namespace,
            wanted.pdb.as_ref(),
            &workers,
            owner_uid
        ),
        ensure_or_remove::<HorizontalPodAutoscaler>(
            client,
            namespace,
            wanted.hpa.as_ref(),
            &workers,
            owner_uid
        ),
        ensure_or_remove::<Ingress>(
            client,
            namespace,
            wanted.ingress.as_ref(),
            &workers,
            owner_uid
        ),
    )?;
    let second = futures::try_join!(
        ensure(client, namespace, wanted.migration_job.as_ref()),
        ensure(client, namespace, wanted.deployment.as_ref()),
        ensure_or_remove::<CronJob>(
            client,
            namespace,
            wanted.index_cronjob.as_ref(),
            &index,
            owner_uid
        ),
    )?;
    let (sa, cm, svc, pdb, hpa, ingress) = first;
    let (job, (deployment_note, deployment), index) = second;
    let mut notes: Vec<Note> = [
        sa.0,
        cm.0,
        svc.0,
        pdb,
        hpa,
        ingress,
        job.0,
        deployment_note,
        index,
    ]
    .into_iter()
    .flatten()
    .collect();
    if let Some(job) = &wanted.migration_job {
        let superseded =
            delete_superseded_migrations(client, namespace, cache, owner_uid, &job.name_any())
                .await?;
        notes.extend(superseded);
    }
    Ok((notes, deployment))
}

/// Deletes the cache's migration Jobs other than `current`, with their pods. A Job whose
/// image, database or pod changed is superseded by a new one (its pod template cannot
/// change), and left alone it would run on to its deadline: its pod may be pending for a
/// node or crash-looping, and it would migrate the database for an image no worker will
/// run. Runs on every reconcile that wants a migration Job, so a deletion that failed is
/// retried.
async fn delete_superseded_migrations(
    client: &Client,
    namespace: &str,
    cache: &str,
    owner_uid: &str,
    current: &str,
) -> Result<Vec<Note>, Error> {
    let selector = selector_labels(cache, Component::Migrate)
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let deleted =
        apply::delete_owned_except::<Job>(client, namespace, &selector, owner_uid, current).await?;
    Ok(deleted
        .iter()
        .map(|name| Note::deleted::<Job>(namespace, name))
        .collect())
}

/// Field manager that keeps the worker count while ownership passes to an autoscaler.
const HANDOVER_MANAGER: &str = "larder-operator-handover";

/// Before workers that leave their count to an autoscaler are applied over `current`, applies
/// the current count under a second manager, so the apply dropping it does not reset it to one
/// (see [`deployment::replicas_to_hand_over`]).
pub async fn hand_over_replicas(
    client: &Client,
    namespace: &str,
    current: Option<&Deployment>,
    wanted: Option<&Deployment>,
) -> Result<(), Error> {
    let (Some(current), Some(wanted)) = (current, wanted) else {
        return Ok(());
    };
    let Some(replicas) = deployment::replicas_to_hand_over(current, wanted, apply::MANAGER) else {
        return Ok(());
    };
    let name = current.name_any();
    let patch = serde_json::json!({
        "apiVersion": Deployment::api_version(&()),
        "kind": Deployment::kind(&()),
        "metadata": {"name": name},
        "spec": {"replicas": replicas},
    });
    // Same value as the live one: shared ownership, no conflict, nothing to force.
    Api::<Deployment>::namespaced(client.clone(), namespace)
        .patch(
            &name,
            &PatchParams::apply(HANDOVER_MANAGER),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("hand over replicas of", "Deployment", &name, e))?;
    Ok(())
}

/// Applies `obj` when given; its Event (if it changed) and the object as stored.
async fn ensure<K>(
    client: &Client,
    namespace: &str,
    obj: Option<&K>,
) -> Result<(Option<Note>, Option<K>), Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let Some(obj) = obj else {
        return Ok((None, None));
    };
    let (applied, stored) = apply::apply(client, namespace, obj).await?;
    Ok((Note::applied(obj, applied), Some(stored)))
}

/// Applies `obj` when given, else deletes the child `name` if `owner_uid` controls it.
async fn ensure_or_remove<K>(
    client: &Client,
    namespace: &str,
    obj: Option<&K>,
    name: &str,
    owner_uid: &str,
) -> Result<Option<Note>, Error>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    if let Some(obj) = obj {
        debug_assert_eq!(obj.name_any(), name);
        return Ok(ensure(client, namespace, Some(obj)).await?.0);
    }
    let deleted = apply::delete_owned::<K>(client, namespace, name, owner_uid).await?;
    Ok(deleted.then(|| Note::deleted::<K>(namespace, name)))
}
