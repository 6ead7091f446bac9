//! The `GCPolicy` reconcile pipeline.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};

use super::binary_cache::get;
use super::events::{self, Note};
use super::{apply, Context, Error, MANAGER};
use crate::build::{gc_cronjob, names, GC_POLICY_LABEL};
use crate::crd::{BinaryCache, GCPolicy, GcResult};
use crate::status::gc_policy::{self as status, JOB_NAME_LABEL};
use crate::validate::{validate_gc_policy, InvalidGcPolicy};

/// How often a policy is looked at again without changes (runs are also watched).
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a policy waiting on its cache is looked at again.
const WAITING: Duration = Duration::from_secs(60);

/// Reconciles one GC policy.
pub async fn reconcile(policy: Arc<GCPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::Metadata("namespace"))?;
    let client = &ctx.client;

    // Fetch: the cache it collects.
    let cache: Option<BinaryCache> = get(client, &namespace, &policy.spec.cache_ref.name).await?;

    // Validate (pure).
    let view = match validate_gc_policy(&policy, cache.as_ref()) {
        Ok(view) => view,
        Err(invalid) => return report_invalid(&policy, &ctx, &invalid).await,
    };

    // Build (pure) and apply.
    let cronjob = gc_cronjob::build(&view);
    let (result, applied) = match apply::apply(client, &namespace, &cronjob).await {
        Ok(done) => done,
        Err(e) => return report_apply_failed(&policy, &ctx, e).await,
    };
    if let Some(note) = Note::applied(&cronjob, result) {
        events::publish(&ctx.recorder, policy.as_ref(), note).await;
    }

    // Runs: the policy's Jobs and their pods.
    let selector = format!("{GC_POLICY_LABEL}={}", view.name);
    let jobs = Api::<Job>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list", "Job", &selector, e))?
        .items;
    let pods = pods_of(client, &namespace, &jobs).await?;
    let run = status::last_run(&jobs, &pods);

    let previous = policy.status.as_ref().and_then(|s| s.last_run.as_ref());
    if let Some(run) = run
        .as_ref()
        .filter(|r| previous.map(|p| &p.job_name) != Some(&r.job_name))
    {
        let (type_, reason) = match run.result {
            GcResult::Succeeded => (EventType::Normal, "RunSucceeded"),
            GcResult::Failed => (EventType::Warning, "RunFailed"),
        };
        let note = match &run.summary {
            Some(s) => format!(
                "Job {}{}: {} objects ({} bytes) deleted, {} roots expired, {} failures in {} ms",
                run.job_name,
                if s.dry_run { " (dry run)" } else { "" },
                s.objects_deleted,
                s.bytes_deleted,
                s.roots_expired,
                s.failures,
                s.duration_ms
            ),
            None => format!(
                "Job {}: {}",
                run.job_name,
                run.message.as_deref().unwrap_or("no summary")
            ),
        };
        let note = Note {
            type_,
            reason: reason.into(),
            action: "Collect",
            note,
            related: Some(events::reference::<Job>(&namespace, &run.job_name)),
        };
        events::publish(&ctx.recorder, policy.as_ref(), note).await;
    }
    write_status(client, &policy, Ok((&applied, run))).await?;
    Ok(Action::requeue(RESYNC))
}

/// Pods of the finished Jobs, found by the label the Job controller sets.
async fn pods_of(client: &Client, namespace: &str, jobs: &[Job]) -> Result<Vec<Pod>, Error> {
    let api = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut pods = Vec::new();
    for job in jobs {
        let selector = format!("{JOB_NAME_LABEL}={}", job.name_any());
        let found = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::kube("list", "Pod", &selector, e))?;
        pods.extend(found.items);
    }
    Ok(pods)
}

/// Status and Event for a CronJob the API server refuses (a schedule or time zone the schema
/// lets through but the CronJob validation does not); other errors go back quietly. Either
/// way retried with backoff.
async fn report_apply_failed(
    policy: &GCPolicy,
    ctx: &Context,
    error: Error,
) -> Result<Action, Error> {
    let Some(reason) = error.lasting_reason() else {
        return Err(error);
    };
    events::warn_once(ctx, policy, conditions, reason, "Apply", error.to_string()).await?;
    let failure = status::Failure {
        reason,
        message: error.to_string(),
    };
    write_status(&ctx.client, policy, Err(failure)).await?;
    Err(error)
}

/// The stored conditions of a policy, for [`events::warn_once`].
fn conditions(policy: &GCPolicy) -> Option<&[Condition]> {
    policy.status.as_ref().map(|s| s.conditions.as_slice())
}

async fn report_invalid(
    policy: &GCPolicy,
    ctx: &Context,
    invalid: &InvalidGcPolicy,
) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::Metadata("namespace"))?;
    let note = invalid.to_string();
    events::warn_once(ctx, policy, conditions, invalid.reason(), "Validate", note).await?;
    if let InvalidGcPolicy::CacheNotFound(_) = invalid {
        // The cache's ServiceAccount and ConfigMap went with it: a run now could not even
        // start its pod, and its Job would hang active forever (blocking later runs).
        let cronjob = names::gc_cronjob(&policy.name_any());
        let uid = policy.uid().unwrap_or_default();
        if apply::delete_owned::<CronJob>(&ctx.client, &namespace, &cronjob, &uid).await? {
            let note = Note::deleted::<CronJob>(&namespace, &cronjob);
            events::publish(&ctx.recorder, policy, note).await;
        }
    }
    write_status(&ctx.client, policy, Err(invalid.into())).await?;
    ctx.metrics
        .invalid(GCPolicy::kind(&()).as_ref(), invalid.reason());
    Ok(if invalid.waits_on_other_objects() {
        Action::requeue(WAITING)
    } else {
        Action::await_change()
    })
}

async fn write_status(
    client: &Client,
    policy: &GCPolicy,
    outcome: Result<(&CronJob, Option<crate::crd::GcRun>), status::Failure>,
) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let new = status::compute(
        policy.status.as_ref(),
        policy.metadata.generation,
        outcome,
        &now,
    );
    if policy.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let name = policy.name_any();
    let api: Api<GCPolicy> =
        Api::namespaced(client.clone(), &policy.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": GCPolicy::api_version(&()),
        "kind": GCPolicy::kind(&()),
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube("update status of", "GCPolicy", &name, e))?;
    Ok(())
}
