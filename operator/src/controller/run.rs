//! Wires the reconcilers into kube-runtime controllers watching one namespace or all.

use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::PartialObjectMeta as Meta;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::{binary_cache, gc_policy, Context, Error, MANAGER};
use crate::build::{GC_POLICY_LABEL, MANAGED_BY_LABEL};
use crate::crd::{BinaryCache, GCPolicy};
use crate::validate::referenced_secrets;

/// Reconciles one controller runs at a time. Each sends a few requests side by side over
/// connections of their own (HTTP/1.1); unbounded, a burst of new caches opens hundreds of
/// TLS connections at once, which costs memory and gains nothing once the API server is busy.
const CONCURRENCY: u16 = 16;

/// What the controllers watch.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Watch only this namespace; all when `None`.
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The watch of a kind the operator makes: only objects carrying the label every child
/// carries. Owned kinds are common ones (ConfigMaps, Services, Deployments, Jobs); without
/// it the operator would receive every such object in the cluster, and every change to one.
fn children_only() -> watcher::Config {
    watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGER}"))
}

/// Runs both controllers until a shutdown signal.
///
/// Every watch but the two main ones is metadata-only: what maps a change to a reconcile is
/// names, labels and owner references, and a reconcile reads what it needs itself. kube's
/// `owns` watches metadata by itself; the `watches` get `PartialObjectMeta` APIs. For
/// Secrets this keeps the contents of every Secret in the namespaces watched (Helm
/// releases, tokens, certificates) from streaming through the operator, which reads only
/// those a cache names; users' Secrets carry no label of ours, so that watch cannot select
/// on one.
pub async fn run(ctx: Arc<Context>, options: Options) {
    let ns = options.namespace.as_deref();
    let client = &ctx.client;
    let wc = watcher::Config::default();
    let ours = children_only();

    let caches = Controller::new(api::<BinaryCache>(client, ns), wc.clone());
    let cache_store = caches.store();
    let caches = caches
        .with_config(config())
        .owns(api::<ServiceAccount>(client, ns), ours.clone())
        .owns(api::<ConfigMap>(client, ns), ours.clone())
        .owns(api::<Service>(client, ns), ours.clone())
        .owns(api::<Deployment>(client, ns), ours.clone())
        .owns(api::<PodDisruptionBudget>(client, ns), ours.clone())
        .owns(
            api::<Meta<HorizontalPodAutoscaler>>(client, ns),
            ours.clone(),
        )
        .owns(api::<Ingress>(client, ns), ours.clone())
        .owns(api::<CronJob>(client, ns), ours.clone())
        .owns(api::<Job>(client, ns), ours.clone())
        // A referenced Secret appearing or changing re-runs its caches (e.g. clears SecretNotFound).
        .watches(
            api::<Meta<Secret>>(client, ns),
            wc.clone(),
            move |secret: Meta<Secret>| {
                let namespace = secret.namespace();
                let name = secret.name_any();
                cache_store
                    .state()
                    .into_iter()
                    .filter(|c| c.namespace() == namespace && referenced_secrets(c).contains(&name))
                    .map(|c| ObjectRef::from_obj(c.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |c, ctx| timed("BinaryCache", c, ctx, binary_cache::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| {
            report("BinaryCache", &ctx.metrics, r);
            futures::future::ready(())
        });

    let policies = Controller::new(api::<GCPolicy>(client, ns), wc.clone());
    let policy_store = policies.store();
    let policies = policies
        .with_config(config())
        .owns(api::<CronJob>(client, ns), ours)
        // Runs are Jobs of the CronJob (not owned by the policy): find the policy by label.
        .watches(
            api::<Meta<Job>>(client, ns),
            watcher::Config::default().labels(GC_POLICY_LABEL),
            |job: Meta<Job>| {
                let policy = job.labels().get(GC_POLICY_LABEL).cloned();
                let namespace = job.namespace();
                policy.map(|p| match namespace {
                    Some(ns) => ObjectRef::new(&p).within(&ns),
                    None => ObjectRef::new(&p),
                })
            },
        )
        // A cache appearing or finishing its migration re-runs the policies that name it.
        .watches(
            api::<Meta<BinaryCache>>(client, ns),
            wc,
            move |cache: Meta<BinaryCache>| {
                let namespace = cache.namespace();
                let name = cache.name_any();
                policy_store
                    .state()
                    .into_iter()
                    .filter(|p| p.namespace() == namespace && p.spec.cache_ref.name == name)
                    .map(|p| ObjectRef::from_obj(p.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal()
        .run(
            |p, ctx| timed("GCPolicy", p, ctx, gc_policy::reconcile),
            error_policy,
            ctx.clone(),
        )
        .for_each(|r| {
            report("GCPolicy", &ctx.metrics, r);
            futures::future::ready(())
        });

    futures::join!(caches, policies);
}

/// Logs what a controller's stream yields. Failed reconciles were logged where they ran; a
/// failed list or watch (a kind the operator may not read, an API server away) is logged
/// here at warn level and counted, since otherwise an operator without the RBAC it needs
/// looks healthy while changes to that kind never reach it.
fn report<T, R: std::fmt::Display>(
    kind: &str,
    metrics: &crate::metrics::Metrics,
    result: Result<T, controller::Error<R, watcher::Error>>,
) {
    match result {
        Ok(_) => {}
        Err(controller::Error::QueueError(e)) => {
            metrics.watch_failed(kind);
            tracing::warn!(controller = kind, error = %e, "list or watch failed; retrying");
        }
        Err(e) => tracing::debug!(controller = kind, error = %e, "controller"),
    }
}

fn config() -> controller::Config {
    controller::Config::default().concurrency(CONCURRENCY)
}

/// Runs one reconcile with metrics, logging and backoff bookkeeping.
async fn timed<K, F, Fut>(
    kind: &'static str,
    obj: Arc<K>,
    ctx: Arc<Context>,
    reconcile: F,
) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()>,
    F: FnOnce(Arc<K>, Arc<Context>) -> Fut,
    Fut: std::future::Future<Output = Result<Action, Error>>,
{
    let key = backoff_key(kind, obj.as_ref());
    let started = Instant::now();
    let result = reconcile(obj, ctx.clone()).await;
    ctx.metrics.reconciled(kind, started.elapsed());
    match &result {
        Ok(_) => {
            ctx.backoff.succeeded(&key);
            tracing::debug!(object = %key, elapsed_ms = started.elapsed().as_millis() as u64, "reconciled");
        }
        Err(e) => tracing::warn!(object = %key, error = %e, "reconcile failed"),
    }
    result
}

fn backoff_key<K: Resource>(kind: &str, obj: &K) -> String {
    format!(
        "{kind}/{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}

/// Retries a failed reconcile after a per-object exponential backoff.
fn error_policy<K: Resource<DynamicType = ()>>(
    obj: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let kind = K::kind(&());
    ctx.metrics.failed(&kind, error.metric_label());
    Action::requeue(ctx.backoff.failed(&backoff_key(&kind, obj.as_ref())))
}
