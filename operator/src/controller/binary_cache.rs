//! The `BinaryCache` reconcile pipeline.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, Client, Resource, ResourceExt};

use super::children as controller_children;
use super::events::{self, Note};
use super::{apply, suspend, Context, Error, MANAGER};
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
    let mut notes = Vec::new();

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
        let key_secret = secret.name_any();
        if apply::create_once(client, &namespace, &secret).await? {
            notes.push(Note {
                type_: EventType::Normal,
                reason: "SigningKeyGenerated".into(),
                action: "Create",
                note: format!("generated signing key {key_name} in Secret {key_secret}"),
                related: Some(secret.object_ref(&())),
            });
            secrets.insert(key_secret, Some(secret_data(&secret)));
        } else {
            // Someone else made it meanwhile: use theirs.
            secrets.extend(fetch_secrets(client, &namespace, &[key_secret]).await?);
        }
        valid = validate::validate(&cache, &secrets, &ctx.defaults);
    }
    let valid = match valid {
        Ok(valid) => valid,
        Err(invalid) => return report_invalid(&cache, &ctx, &invalid).await,
    };

    if cache.spec.suspend {
        // Nothing is applied, but scheduled index builds stop (docs/operator.md).
        let index = names::index_cronjob(valid.view.name);
        let uid = cache.uid().unwrap_or_default();
        if suspend::suspend_cronjob(client, &namespace, &index, &uid).await? {
            notes.push(Note::suspended::<CronJob>(&namespace, &index));
        }
        write_status(client, &cache, &Outcome::Suspended, facts(&valid, None)).await?;
        events::publish_all(&ctx.recorder, cache.as_ref(), notes).await;
        return Ok(Action::requeue(RESYNC));
    }

    // Facts about the rollout: the running Deployment and the migration Job.
    let name = valid.view.name;
    let job_name = migration_job::name(&valid.view, &valid.image, &valid.database_checksum);
    let workers_name = names::workers(name);
    let (current, job) = futures::try_join!(
        get::<Deployment>(client, &namespace, &workers_name),
        get::<Job>(client, &namespace, &job_name),
    )?;
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
    let uid = cache.uid().unwrap_or_default();
    let applying = async {
        controller_children::hand_over_replicas(
            client,
            &namespace,
            current.as_ref(),
            wanted.deployment.as_ref(),
        )
        .await?;
        controller_children::apply_all(client, &namespace, name, &uid, wanted).await
    };
    let (applied_notes, applied) = match applying.await {
        Ok(done) => done,
        Err(e) => {
            events::publish_all(&ctx.recorder, cache.as_ref(), notes).await;
            return report_apply_failed(&cache, &ctx, &valid, e).await;
        }
    };
    notes.extend(applied_notes);
    let workers = applied.or(current).as_ref().map(Workers::of);

    if let Rollout::MigrationFailed {
        target, message, ..
    } = &rollout
    {
        // Once per failed Job, not at every resync: the status written below names the Job,
        // so a stored status naming it means its Warning went out.
        let reported = status::migration_failed_message(&job_name, target, message);
        let note = Note {
            type_: EventType::Warning,
            reason: status::MIGRATION_FAILED.into(),
            action: "Migrate",
            note: format!("migration to {target} failed: {message}"),
            related: Some(events::reference::<Job>(&namespace, &job_name)),
        };
        let published =
            |c: &BinaryCache| status::reports_migration_failure(c.status.as_ref(), &reported);
        events::publish_unless(&ctx, cache.as_ref(), published, note).await?;
    }
    let outcome = Outcome::Applied {
        rollout: &rollout,
        workers,
        migration_job: Some(job_name.clone()),
    };
    write_status(
        client,
        &cache,
        &outcome,
        facts(&valid, Some(&valid.database_checksum)),
    )
    .await?;
    events::publish_all(&ctx.recorder, cache.as_ref(), notes).await;
    Ok(match rollout {
        Rollout::Migrating { .. } => Action::requeue(WAITING),
        _ => Action::requeue(RESYNC),
    })
}

/// Status and Event for a child that could not be applied, when retrying alone will not help
/// (else the error goes back to the controller quietly); either way retried with backoff.
async fn report_apply_failed(
    cache: &BinaryCache,
    ctx: &Context,
    valid: &ValidCache<'_>,
    error: Error,
) -> Result<Action, Error> {
    let Some(reason) = error.lasting_reason() else {
        return Err(error);
    };
    events::warn_once(ctx, cache, conditions, reason, "Apply", error.to_string()).await?;
    let outcome = Outcome::ApplyFailed {
        reason,
        message: error.to_string(),
    };
    write_status(&ctx.client, cache, &outcome, facts(valid, None)).await?;
    Err(error)
}

/// The stored conditions of a cache, for [`events::warn_once`].
fn conditions(cache: &BinaryCache) -> Option<&[Condition]> {
    cache.status.as_ref().map(|s| s.conditions.as_slice())
}

/// Status and Event for a cache that failed validation; looks again later, never in a hot loop.
async fn report_invalid(
    cache: &BinaryCache,
    ctx: &Context,
    invalid: &InvalidCache,
) -> Result<Action, Error> {
    let note = invalid.to_string();
    events::warn_once(ctx, cache, conditions, invalid.reason(), "Validate", note).await?;
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
    let found = futures::future::try_join_all(
        names
            .iter()
            .map(|name| get::<Secret>(client, namespace, name)),
    )
    .await?;
    Ok(names
        .iter()
        .cloned()
        .zip(found.iter().map(|s| s.as_ref().map(secret_data)))
        .collect())
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
