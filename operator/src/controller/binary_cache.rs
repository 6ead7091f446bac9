//! The `BinaryCache` reconcile pipeline.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};

use super::apply;
use super::{events, Context, Error, MANAGER};
use crate::build::rollout::{self, MigrationFacts, Rollout};
use crate::build::{children, deployment, migration_job, names, signing_key};
use crate::crd::{BinaryCache, BinaryCacheStatus};
use crate::status::binary_cache::{self as status, Facts, Outcome, Workers};
use crate::validate::{self, secret_data, InvalidCache, SigningKeyState, ValidCache};

/// How often a healthy cache is looked at again even without changes.
const RESYNC: Duration = Duration::from_secs(600);
/// How soon a cache waiting on another object (a Secret, a Job) is looked at again.
const WAITING: Duration = Duration::from_secs(30);

/// Reconciles one cache.
pub async fn reconcile(cache: Arc<BinaryCache>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = cache.namespace().ok_or(Error::Metadata("namespace"))?;
    let client = &ctx.client;

    // Fetch: every referenced Secret.
    let mut secrets =
        fetch_secrets(client, &namespace, &validate::referenced_secrets(&cache)).await?;

    // Validate (pure); generate the signing key first if that is all that is missing.
    let mut valid = validate::validate(&cache, &secrets, &ctx.defaults);
    if let Ok(ValidCache {
        signing_key: SigningKeyState::Generate { key_name },
        view,
        ..
    }) = &valid
    {
        let secret = signing_key::build(view, &signing_key::generate(key_name, random_seed()?));
        if apply::create_once(client, &namespace, &secret).await? {
            let note = format!(
                "generated signing key {key_name} in Secret {}",
                secret.name_any()
            );
            events::publish(
                &ctx.recorder,
                cache.as_ref(),
                EventType::Normal,
                "SigningKeyGenerated",
                "Create",
                note,
                Some(secret.object_ref(&())),
            )
            .await;
        }
        let key_secret = names::signing_key_secret(&cache.name_any(), &cache.spec);
        secrets.extend(fetch_secrets(client, &namespace, &[key_secret]).await?);
        valid = validate::validate(&cache, &secrets, &ctx.defaults);
    }
    let valid = match valid {
        Ok(valid) => valid,
        Err(invalid) => return report_invalid(&cache, &ctx, &invalid).await,
    };

    if cache.spec.suspend {
        write_status(client, &cache, &Outcome::Suspended, facts(&valid, None)).await?;
        return Ok(Action::requeue(RESYNC));
    }

    // Facts about the rollout: the running Deployment and the migration Job.
    let name = valid.view.name;
    let current: Option<Deployment> = get(client, &namespace, &names::workers(name)).await?;
    let job_name = names::migration_job(
        name,
        &migration_job::key(&valid.image, &valid.database_checksum),
    );
    let job: Option<Job> = get(client, &namespace, &job_name).await?;
    let old = cache.status.clone().unwrap_or_default();
    let migration = MigrationFacts {
        migrated_image: old.migrated_image.clone(),
        migrated_database: old.migrated_database.clone(),
        job: Some(migration_job::state(job.as_ref())),
        current_image: current
            .as_ref()
            .and_then(deployment::image_of)
            .map(str::to_string),
    };
    let rollout = rollout::decide(&valid.image, &valid.database_checksum, &migration);

    // Build (pure) and apply.
    let wanted = children::build(&valid, &rollout);
    let applied = apply_children(&ctx, &cache, &namespace, wanted).await?;
    let workers = applied.or(current).as_ref().map(Workers::of);

    let outcome = Outcome::Applied {
        rollout: &rollout,
        workers,
        migration_job: rollout.needs_migration_job().then(|| job_name.clone()),
    };
    write_status(
        client,
        &cache,
        &outcome,
        facts(&valid, Some(&valid.database_checksum)),
    )
    .await?;
    if let Rollout::MigrationFailed { message, .. } = &rollout {
        let note = format!("migration to {} failed: {message}", valid.image);
        events::publish(
            &ctx.recorder,
            cache.as_ref(),
            EventType::Warning,
            "MigrationFailed",
            "Migrate",
            note,
            Some(events::reference::<Job>(&namespace, &job_name)),
        )
        .await;
    }
    Ok(match rollout {
        Rollout::Migrating { .. } => Action::requeue(WAITING),
        _ => Action::requeue(RESYNC),
    })
}

/// Applies every wanted child, removes unwanted optional ones, and returns the applied Deployment.
async fn apply_children(
    ctx: &Context,
    cache: &BinaryCache,
    namespace: &str,
    wanted: children::CacheChildren,
) -> Result<Option<Deployment>, Error> {
    let client = &ctx.client;
    let name = cache.name_any();
    let uid = cache.uid().unwrap_or_default();
    macro_rules! ensure {
        ($obj:expr) => {{
            let obj = $obj;
            let result = apply::apply(client, namespace, &obj).await?;
            events::child_applied(&ctx.recorder, cache, &obj, result).await;
        }};
    }
    macro_rules! ensure_or_remove {
        ($ty:ty, $opt:expr, $child:expr) => {{
            match $opt {
                Some(obj) => ensure!(obj),
                None => {
                    if apply::delete_owned::<$ty>(client, namespace, &$child, &uid).await? {
                        let note = format!("Deleted {} {}", <$ty>::kind(&()), $child);
                        events::publish(
                            &ctx.recorder,
                            cache,
                            EventType::Normal,
                            "Deleted",
                            "Delete",
                            note,
                            Some(events::reference::<$ty>(namespace, &$child)),
                        )
                        .await;
                    }
                }
            }
        }};
    }
    ensure!(wanted.service_account);
    ensure!(wanted.config_map);
    ensure!(wanted.service);
    if let Some(job) = wanted.migration_job {
        ensure!(job);
    }
    let deployment = wanted.deployment.clone();
    if let Some(d) = wanted.deployment {
        ensure!(d);
    }
    ensure_or_remove!(PodDisruptionBudget, wanted.pdb, names::workers(&name));
    ensure_or_remove!(HorizontalPodAutoscaler, wanted.hpa, names::workers(&name));
    ensure_or_remove!(Ingress, wanted.ingress, names::workers(&name));
    ensure_or_remove!(CronJob, wanted.index_cronjob, names::index_cronjob(&name));
    if deployment.is_none() {
        return Ok(None);
    }
    get(client, namespace, &names::workers(&name)).await
}

/// Status and Event for a cache that failed validation; looks again later, never in a hot loop.
async fn report_invalid(
    cache: &BinaryCache,
    ctx: &Context,
    invalid: &InvalidCache,
) -> Result<Action, Error> {
    let was = cache
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.reason.clone(), c.observed_generation));
    // One Warning per new reason or generation, not one per retry.
    if was != Some((invalid.reason().to_string(), cache.metadata.generation)) {
        events::publish(
            &ctx.fresh_recorder(),
            cache,
            EventType::Warning,
            invalid.reason(),
            "Validate",
            invalid.to_string(),
            None,
        )
        .await;
    }
    write_status(
        &ctx.client,
        cache,
        &Outcome::Invalid(invalid),
        Facts::default(),
    )
    .await?;
    ctx.metrics.invalid(
        crate::crd::BinaryCache::kind(&()).as_ref(),
        invalid.reason(),
    );
    Ok(if invalid.waits_on_other_objects() {
        Action::requeue(WAITING * 2)
    } else {
        // Only a spec change helps, and that triggers a reconcile by itself.
        Action::await_change()
    })
}

fn facts(valid: &ValidCache, database: Option<&String>) -> Facts {
    Facts {
        url: Some(valid.view.url.clone()),
        public_key: match &valid.signing_key {
            SigningKeyState::Existing { public_key } => Some(public_key.clone()),
            SigningKeyState::Generate { .. } => None,
        },
        database: database.cloned(),
    }
}

async fn write_status(
    client: &Client,
    cache: &BinaryCache,
    outcome: &Outcome<'_>,
    facts: Facts,
) -> Result<(), Error> {
    let now = Time(Timestamp::now());
    let new: BinaryCacheStatus = status::compute(
        cache.status.as_ref(),
        cache.metadata.generation,
        outcome,
        facts,
        &now,
    );
    let name = cache.name_any();
    if cache.status.as_ref() == Some(&new) {
        return Ok(());
    }
    let api: Api<BinaryCache> =
        Api::namespaced(client.clone(), &cache.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": BinaryCache::api_version(&()),
        "kind": BinaryCache::kind(&()),
        "status": new,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|e| Error::kube("update status of", "BinaryCache", &name, e))?;
    Ok(())
}

pub(super) async fn fetch_secrets(
    client: &Client,
    namespace: &str,
    names: &[String],
) -> Result<validate::Secrets, Error> {
    let mut out = validate::Secrets::new();
    for name in names {
        let secret: Option<Secret> = get(client, namespace, name).await?;
        out.insert(name.clone(), secret.as_ref().map(secret_data));
    }
    Ok(out)
}

pub(super) async fn get<K>(client: &Client, namespace: &str, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map_err(|e| Error::kube("read", K::kind(&()), name, e))
}

fn random_seed() -> Result<[u8; 32], Error> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| Error::Random(e.to_string()))?;
    Ok(seed)
}
