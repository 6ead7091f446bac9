//! Which image workers run: a new image only after its migration Job succeeded.

use super::migration_job::JobState;

/// What the cluster says about migrations and the running workers.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct MigrationFacts {
    /// `status.migratedImage` of the cache.
    pub migrated_image: Option<String>,
    /// `status.migratedDatabase` of the cache.
    pub migrated_database: Option<String>,
    /// The migration Job for the wanted image and database.
    pub job: Option<JobState>,
    /// The image the existing Deployment runs, if there is one.
    pub current_image: Option<String>,
}

/// The rollout decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rollout {
    /// The wanted image is migrated; workers run it.
    Current {
        /// The image.
        image: String,
    },
    /// The migration for `target` has not finished; workers keep `keep` (none exist yet if `None`).
    Migrating {
        /// The wanted image.
        target: String,
        /// The image workers keep meanwhile.
        keep: Option<String>,
    },
    /// The migration for `target` failed; workers keep `keep`.
    MigrationFailed {
        /// The wanted image.
        target: String,
        /// The image workers keep meanwhile.
        keep: Option<String>,
        /// Why the Job failed.
        message: String,
    },
}

impl Rollout {
    /// The image the worker Deployment should run; `None` leaves it absent.
    pub fn worker_image(&self) -> Option<&str> {
        match self {
            Self::Current { image } => Some(image),
            Self::Migrating { keep, .. } | Self::MigrationFailed { keep, .. } => keep.as_deref(),
        }
    }

    /// Whether the migration Job should exist (be created or kept).
    pub fn needs_migration_job(&self) -> bool {
        matches!(self, Self::Migrating { .. })
    }

    /// The image whose migration is done, to record in status.
    pub fn migrated_image(&self) -> Option<&str> {
        match self {
            Self::Current { image } => Some(image),
            _ => None,
        }
    }
}

/// Decides the rollout of `image` against the database identified by `database`.
pub fn decide(image: &str, database: &str, facts: &MigrationFacts) -> Rollout {
    let recorded = facts.migrated_image.as_deref() == Some(image)
        && facts.migrated_database.as_deref() == Some(database);
    match &facts.job {
        _ if recorded => Rollout::Current {
            image: image.into(),
        },
        Some(JobState::Succeeded) => Rollout::Current {
            image: image.into(),
        },
        Some(JobState::Failed(message)) => Rollout::MigrationFailed {
            target: image.into(),
            keep: facts.current_image.clone(),
            message: message.clone(),
        },
        Some(JobState::Running | JobState::Absent) | None => Rollout::Migrating {
            target: image.into(),
            keep: facts.current_image.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(job: Option<JobState>, current: Option<&str>) -> MigrationFacts {
        MigrationFacts {
            migrated_image: Some("larder:1".into()),
            migrated_database: Some("db".into()),
            job,
            current_image: current.map(Into::into),
        }
    }

    #[test]
    fn first_install_waits_for_migration_without_workers() {
        let rollout = decide("larder:1", "db", &MigrationFacts::default());
        assert_eq!(rollout.worker_image(), None);
        assert!(rollout.needs_migration_job());
    }

    #[test]
    fn recorded_migration_runs_the_image() {
        let rollout = decide("larder:1", "db", &facts(None, Some("larder:1")));
        assert_eq!(
            rollout,
            Rollout::Current {
                image: "larder:1".into()
            }
        );
        assert!(!rollout.needs_migration_job());
    }

    #[test]
    fn upgrade_keeps_the_old_image_until_the_job_succeeds() {
        let running = decide(
            "larder:2",
            "db",
            &facts(Some(JobState::Running), Some("larder:1")),
        );
        assert_eq!(running.worker_image(), Some("larder:1"));
        assert!(running.needs_migration_job());
        let done = decide(
            "larder:2",
            "db",
            &facts(Some(JobState::Succeeded), Some("larder:1")),
        );
        assert_eq!(done.worker_image(), Some("larder:2"));
        assert_eq!(done.migrated_image(), Some("larder:2"));
    }

    #[test]
    fn a_new_database_migrates_again() {
        let rollout = decide("larder:1", "other-db", &facts(None, Some("larder:1")));
        assert!(rollout.needs_migration_job());
        assert_eq!(rollout.worker_image(), Some("larder:1"));
    }

    #[test]
    fn failed_migration_holds_the_old_image_and_stops_retrying() {
        let failed = decide(
            "larder:2",
            "db",
            &facts(Some(JobState::Failed("boom".into())), Some("larder:1")),
        );
        assert_eq!(failed.worker_image(), Some("larder:1"));
        assert!(!failed.needs_migration_job());
        assert!(matches!(failed, Rollout::MigrationFailed { message, .. } if message == "boom"));
    }
}
