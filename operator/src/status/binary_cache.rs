//! The status of a `BinaryCache`.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{merge, Decided, DEGRADED, PROGRESSING, READY};
use crate::build::rollout::Rollout;
use crate::crd::BinaryCacheStatus;
use crate::validate::InvalidCache;

/// How far the worker Deployment has come, as its status says.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Workers {
    /// Workers wanted.
    pub desired: i32,
    /// Workers passing readiness.
    pub ready: i32,
    /// Workers running the newest template.
    pub updated: i32,
    /// The Deployment controller has seen the newest spec.
    pub observed: bool,
    /// Why the rollout stopped, when the Deployment controller gave up waiting for it
    /// (`Progressing` False with `ProgressDeadlineExceeded`: new pods crash or never start).
    pub stalled: Option<String>,
}

impl Workers {
    /// Reads a Deployment.
    pub fn of(deployment: &Deployment) -> Self {
        let status = deployment.status.clone().unwrap_or_default();
        let desired = deployment
            .spec
            .as_ref()
            .and_then(|s| s.replicas)
            .unwrap_or(status.replicas.unwrap_or(1));
        Self {
            desired,
            ready: status.ready_replicas.unwrap_or(0),
            updated: status.updated_replicas.unwrap_or(0),
            observed: status.observed_generation.is_some()
                && status.observed_generation >= deployment.metadata.generation,
            stalled: status
                .conditions
                .iter()
                .flatten()
                .find(|c| {
                    c.type_ == "Progressing"
                        && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
                })
                .map(|c| c.message.clone().unwrap_or_default()),
        }
    }

    fn rolled_out(&self) -> bool {
        self.observed && self.updated >= self.desired && self.ready >= self.desired
    }
}

/// What a reconcile ended with.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome<'a> {
    /// Validation failed; nothing was applied.
    Invalid(&'a InvalidCache),
    /// `spec.suspend`: nothing was applied.
    Suspended,
    /// Applying a child failed in a way retries alone will not fix.
    ApplyFailed {
        /// CamelCase reason.
        reason: &'static str,
        /// What failed.
        message: String,
    },
    /// Children applied.
    Applied {
        /// The rollout decision.
        rollout: &'a Rollout,
        /// The worker Deployment's progress, if it exists.
        workers: Option<Workers>,
        /// Name of the migration Job for the wanted image, while one runs or after it failed.
        migration_job: Option<String>,
    },
}

/// Facts the status reports besides conditions.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Facts {
    /// The substituter URL.
    pub url: Option<String>,
    /// The public key.
    pub public_key: Option<String>,
    /// The database checksum the migration ran against.
    pub database: Option<String>,
}

/// The new status from the old one and the reconcile's outcome.
pub fn compute(
    old: Option<&BinaryCacheStatus>,
    generation: Option<i64>,
    outcome: &Outcome,
    facts: Facts,
    now: &Time,
) -> BinaryCacheStatus {
    let old = old.cloned().unwrap_or_default();
    let decided = decide(outcome);
    let mut status = BinaryCacheStatus {
        observed_generation: generation,
        conditions: merge(&old.conditions, &decided, generation, now),
        ready_replicas: old.ready_replicas,
        url: facts.url.or(old.url),
        public_key: facts.public_key.or(old.public_key),
        migrated_image: old.migrated_image,
        migrated_database: old.migrated_database,
    };
    if let Outcome::Applied {
        rollout, workers, ..
    } = outcome
    {
        status.ready_replicas = workers.as_ref().map_or(0, |w| w.ready);
        if let Some(image) = rollout.migrated_image() {
            status.migrated_image = Some(image.to_string());
            status.migrated_database = facts.database.or(status.migrated_database);
        }
    }
    status
}

/// Reason of the conditions (and the Warning) of a failed migration.
pub const MIGRATION_FAILED: &str = "MigrationFailed";

/// The `Degraded` message of a failed migration: names the Job, so each failed Job has its
/// own, which is what keeps its Warning to one per Job.
pub fn migration_failed_message(job: &str, target: &str, message: &str) -> String {
    format!("Job {job} for {target} failed: {message}")
}

/// Whether `status` already reports the failed migration whose `Degraded` message is
/// `message` (see [`migration_failed_message`]).
pub fn reports_migration_failure(status: Option<&BinaryCacheStatus>, message: &str) -> bool {
    status.is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == DEGRADED && c.reason == MIGRATION_FAILED && c.message == message)
    })
}

fn decide(outcome: &Outcome) -> Vec<Decided> {
    match outcome {
        Outcome::Invalid(err) => vec![
            Decided::new(READY, false, err.reason(), err.to_string()),
            Decided::new(
                PROGRESSING,
                false,
                err.reason(),
                "fix the problem to continue",
            ),
            Decided::new(DEGRADED, true, err.reason(), err.to_string()),
        ],
        Outcome::Suspended => vec![
            Decided::new(
                READY,
                false,
                "Suspended",
                "spec.suspend is set; children are left as they are, and scheduled index \
                 builds and GC runs stop",
            ),
            Decided::new(PROGRESSING, false, "Suspended", "spec.suspend is set"),
            Decided::new(DEGRADED, false, "Suspended", "spec.suspend is set"),
        ],
        // Not Ready: the cluster does not run what the spec asks for, whatever old workers do.
        Outcome::ApplyFailed { reason, message } => vec![
            Decided::new(READY, false, reason, message.clone()),
            Decided::new(PROGRESSING, false, reason, "retrying with backoff"),
            Decided::new(DEGRADED, true, reason, message.clone()),
        ],
        Outcome::Applied {
            rollout,
            workers,
            migration_job,
        } => applied(rollout, workers.as_ref(), migration_job.as_deref()),
    }
}

fn applied(rollout: &Rollout, workers: Option<&Workers>, job: Option<&str>) -> Vec<Decided> {
    let job = job.unwrap_or("migration");
    let ready = match workers {
        Some(w) if w.ready >= w.desired.max(1) => Decided::new(
            READY,
            true,
            "WorkersReady",
            format!("{} of {} workers ready", w.ready, w.desired),
        ),
        Some(w) => Decided::new(
            READY,
            false,
            "WorkersNotReady",
            format!("{} of {} workers ready", w.ready, w.desired),
        ),
        None => Decided::new(
            READY,
            false,
            "NoWorkers",
            "workers start once the database migration has succeeded",
        ),
    };
    let (progressing, degraded) = match rollout {
        Rollout::MigrationFailed {
            target, message, ..
        } => (
            Decided::new(
                PROGRESSING,
                false,
                MIGRATION_FAILED,
                format!("migration to {target} failed"),
            ),
            Decided::new(
                DEGRADED,
                true,
                MIGRATION_FAILED,
                migration_failed_message(job, target, message),
            ),
        ),
        Rollout::Migrating { target, .. } => (
            Decided::new(
                PROGRESSING,
                true,
                "MigrationRunning",
                format!("waiting for Job {job} to migrate the database for {target}"),
            ),
            Decided::new(DEGRADED, false, "AsExpected", ""),
        ),
        Rollout::Current { image } => match workers {
            Some(w) if !w.rolled_out() => (
                Decided::new(
                    PROGRESSING,
                    true,
                    "RollingOut",
                    format!("{} of {} workers run {image}", w.updated, w.desired),
                ),
                Decided::new(DEGRADED, false, "AsExpected", ""),
            ),
            _ => (
                Decided::new(
                    PROGRESSING,
                    false,
                    "RolloutComplete",
                    format!("workers run {image}"),
                ),
                Decided::new(DEGRADED, false, "AsExpected", ""),
            ),
        },
    };
    // A rollout the Deployment controller gave up on needs a person (a crashing image, pods
    // that cannot be scheduled); without this it would show as progressing forever.
    let (progressing, degraded) = match workers.and_then(|w| w.stalled.as_ref()) {
        Some(why) if !degraded.status => (
            Decided::new(PROGRESSING, false, "RolloutStalled", why.clone()),
            Decided::new(
                DEGRADED,
                true,
                "RolloutStalled",
                format!("the workers' rollout stopped: {why}"),
            ),
        ),
        _ => (progressing, degraded),
    };
    vec![ready, progressing, degraded]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::conditions::is_true;
    use k8s_openapi::jiff::Timestamp;

    fn now() -> Time {
        Time(Timestamp::from_second(1_000).unwrap())
    }

    fn reason(status: &BinaryCacheStatus, type_: &str) -> String {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap()
            .reason
            .clone()
    }

    #[test]
    fn invalid_cache_is_not_ready_with_the_reason() {
        let err = InvalidCache::SecretNotFound {
            secret: "db".into(),
            purpose: "database URL",
        };
        let s = compute(
            None,
            Some(4),
            &Outcome::Invalid(&err),
            Facts::default(),
            &now(),
        );
        assert_eq!(is_true(&s.conditions, READY), Some(false));
        assert_eq!(reason(&s, READY), "SecretNotFound");
        assert_eq!(is_true(&s.conditions, DEGRADED), Some(true));
        assert_eq!(s.observed_generation, Some(4));
        assert!(s
            .conditions
            .iter()
            .all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn first_install_waits_for_migration() {
        let rollout = Rollout::Migrating {
            target: "larder:1".into(),
            keep: None,
        };
        let outcome = Outcome::Applied {
            rollout: &rollout,
            workers: None,
            migration_job: Some("main-migrate-abc".into()),
        };
        let s = compute(None, Some(1), &outcome, Facts::default(), &now());
        assert_eq!(reason(&s, READY), "NoWorkers");
        assert_eq!(reason(&s, PROGRESSING), "MigrationRunning");
        assert_eq!(s.migrated_image, None);
    }

    #[test]
    fn ready_workers_make_a_ready_cache_and_record_the_migration() {
        let rollout = Rollout::Current {
            image: "larder:1".into(),
        };
        let workers = Workers {
            desired: 2,
            ready: 2,
            updated: 2,
            observed: true,
            stalled: None,
        };
        let outcome = Outcome::Applied {
            rollout: &rollout,
            workers: Some(workers),
            migration_job: None,
        };
        let facts = Facts {
            url: Some("https://c".into()),
            public_key: Some("k:pub".into()),
            database: Some("db1".into()),
        };
        let s = compute(None, Some(1), &outcome, facts, &now());
        assert_eq!(is_true(&s.conditions, READY), Some(true));
        assert_eq!(is_true(&s.conditions, PROGRESSING), Some(false));
        assert_eq!(s.ready_replicas, 2);
        assert_eq!(s.migrated_image.as_deref(), Some("larder:1"));
        assert_eq!(s.migrated_database.as_deref(), Some("db1"));
        assert_eq!(s.public_key.as_deref(), Some("k:pub"));
    }

    #[test]
    fn failed_migration_degrades_but_keeps_old_workers_ready() {
        let rollout = Rollout::MigrationFailed {
            target: "larder:2".into(),
            keep: Some("larder:1".into()),
            message: "BackoffLimitExceeded".into(),
        };
        let workers = Workers {
            desired: 1,
            ready: 1,
            updated: 1,
            observed: true,
            stalled: None,
        };
        let outcome = Outcome::Applied {
            rollout: &rollout,
            workers: Some(workers),
            migration_job: Some("main-migrate-abc".into()),
        };
        let s = compute(None, Some(1), &outcome, Facts::default(), &now());
        assert_eq!(is_true(&s.conditions, READY), Some(true));
        assert_eq!(reason(&s, DEGRADED), "MigrationFailed");
        assert_eq!(s.migrated_image, None);
        // The failure of this Job is reported (its Warning went out), another Job's is not.
        let this = migration_failed_message("main-migrate-abc", "larder:2", "BackoffLimitExceeded");
        assert!(reports_migration_failure(Some(&s), &this));
        let next = migration_failed_message("main-migrate-def", "larder:2", "BackoffLimitExceeded");
        assert!(!reports_migration_failure(Some(&s), &next));
        assert!(!reports_migration_failure(None, &this));
    }

    #[test]
    fn a_failed_apply_degrades_and_keeps_what_status_knew() {
        let old = BinaryCacheStatus {
            ready_replicas: 2,
            migrated_image: Some("larder:1".into()),
            ..BinaryCacheStatus::default()
        };
        let outcome = Outcome::ApplyFailed {
            reason: "ChildConflict",
            message: "Service main exists".into(),
        };
        let s = compute(Some(&old), Some(3), &outcome, Facts::default(), &now());
        assert_eq!(is_true(&s.conditions, READY), Some(false));
        assert_eq!(is_true(&s.conditions, DEGRADED), Some(true));
        assert_eq!(reason(&s, DEGRADED), "ChildConflict");
        assert_eq!(s.observed_generation, Some(3));
        assert_eq!(s.ready_replicas, 2);
        assert_eq!(s.migrated_image.as_deref(), Some("larder:1"));
    }

    #[test]
    fn a_stalled_rollout_degrades_the_cache() {
        use k8s_openapi::api::apps::v1::{DeploymentCondition, DeploymentStatus};
        let stalled = Deployment {
            status: Some(DeploymentStatus {
                ready_replicas: Some(2),
                updated_replicas: Some(1),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Progressing".into(),
                    status: "False".into(),
                    reason: Some("ProgressDeadlineExceeded".into()),
                    message: Some("ReplicaSet \"main-7d\" has timed out progressing.".into()),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        };
        let rollout = Rollout::Current {
            image: "larder:2".into(),
        };
        let outcome = Outcome::Applied {
            rollout: &rollout,
            workers: Some(Workers::of(&stalled)),
            migration_job: None,
        };
        let s = compute(None, Some(1), &outcome, Facts::default(), &now());
        assert_eq!(is_true(&s.conditions, DEGRADED), Some(true));
        assert_eq!(reason(&s, DEGRADED), "RolloutStalled");
        assert_eq!(is_true(&s.conditions, PROGRESSING), Some(false));
        let message = &s
            .conditions
            .iter()
            .find(|c| c.type_ == DEGRADED)
            .unwrap()
            .message;
        assert!(message.contains("timed out progressing"), "{message}");
    }

    #[test]
    fn suspended_cache_reports_it() {
        let s = compute(None, Some(1), &Outcome::Suspended, Facts::default(), &now());
        assert_eq!(reason(&s, PROGRESSING), "Suspended");
    }
}
