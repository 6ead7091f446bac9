//! The Job running `larder migrate`; workers roll to an image only after it succeeded for that image.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{checksum, child_meta, labels, names, pod, CacheView, Component};

/// Identifies one migration: the image, the database it runs against, and the pod that runs
/// it. A Job's pod template cannot change after creation, so a changed template (new
/// tolerations for a pod that could not be scheduled, other resources) needs a Job of its
/// own; applying it over the old Job would be refused on every reconcile.
pub fn key(image: &str, database_checksum: &str, template: &PodTemplateSpec) -> String {
    // Serializing a typed object is deterministic (struct order, sorted maps) and cannot fail.
    let template = serde_json::to_string(template).unwrap_or_default();
    checksum::short(&[image, database_checksum, &template], 10)
}

/// The name of the migration Job for `image` against `database_checksum`.
pub fn name(cache: &CacheView, image: &str, database_checksum: &str) -> String {
    names::migration_job(
        cache.name,
        &key(image, database_checksum, &template(cache, image)),
    )
}

/// The migration Job for `image` against the database identified by `database_checksum`.
pub fn build(cache: &CacheView, image: &str, database_checksum: &str) -> Job {
    let template = template(cache, image);
    Job {
        metadata: child_meta(
            names::migration_job(cache.name, &key(image, database_checksum, &template)),
            cache.namespace,
            labels(cache.name, Component::Migrate),
            Some(&cache.owner),
        ),
        spec: Some(JobSpec {
            backoff_limit: Some(3),
            // Status remembers a success, so a finished Job may go; a day leaves time to read logs.
            ttl_seconds_after_finished: Some(86_400),
            active_deadline_seconds: Some(1_800),
            template,
            ..JobSpec::default()
        }),
        ..Job::default()
    }
}

fn template(cache: &CacheView, image: &str) -> PodTemplateSpec {
    let process = pod::Process {
        args: vec!["migrate".into()],
        signing_key: false,
        push_tokens: false,
    };
    let mut pod_spec = pod::spec(cache.name, cache.spec, image, &process);
    pod_spec.restart_policy = Some("Never".into());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(cache.name, Component::Migrate)),
            ..ObjectMeta::default()
        }),
        spec: Some(pod_spec),
    }
}

/// Where a migration Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Not created yet (or already cleaned up).
    Absent,
    /// Created and not finished.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Gave up; the message says why.
    Failed(String),
}

/// Reads a Job's finished conditions.
pub fn state(job: Option<&Job>) -> JobState {
    let Some(job) = job else {
        return JobState::Absent;
    };
    let conditions = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .map(Vec::as_slice)
        .unwrap_or_default();
    for c in conditions.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "Complete" => return JobState::Succeeded,
            "Failed" => {
                return JobState::Failed(
                    c.message
                        .clone()
                        .or_else(|| c.reason.clone())
                        .unwrap_or_else(|| "job failed".into()),
                )
            }
            _ => {}
        }
    }
    JobState::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn finished(type_: &str) -> Job {
        Job {
            status: Some(JobStatus {
                conditions: Some(vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    message: Some("BackoffLimitExceeded".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    #[test]
    fn a_new_image_or_database_gets_a_new_job() {
        let cache = fixtures::minimal();
        let view = fixtures::view(&cache, "http://x");
        let a = build(&view, "larder:1", "db1").metadata.name.unwrap();
        let b = build(&view, "larder:2", "db1").metadata.name.unwrap();
        let c = build(&view, "larder:1", "db2").metadata.name.unwrap();
        assert!(a.starts_with("main-migrate-"));
        assert!(a != b && a != c && b != c);
        assert!(a.len() <= 63);
        assert_eq!(name(&view, "larder:1", "db1"), a);
    }

    #[test]
    fn a_new_pod_template_gets_a_new_job() {
        let cache = fixtures::minimal();
        let view = fixtures::view(&cache, "http://x");
        let before = build(&view, "larder:1", "db1").metadata.name.unwrap();
        let mut tolerant = fixtures::minimal();
        tolerant.spec.workers.node_selector = [("pool".to_string(), "db".to_string())].into();
        let view = fixtures::view(&tolerant, "http://x");
        let after = build(&view, "larder:1", "db1").metadata.name.unwrap();
        assert_ne!(before, after);
        assert_eq!(name(&view, "larder:1", "db1"), after);
    }

    #[test]
    fn migrate_never_restarts_in_place_and_has_no_key() {
        let cache = fixtures::full();
        let job = build(&fixtures::view(&cache, "http://x"), "larder:1", "db");
        let pod = job.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
        assert_eq!(pod.containers[0].args, Some(vec!["migrate".to_string()]));
        assert_eq!(pod.volumes.unwrap().len(), 1);
    }

    #[test]
    fn job_state_from_conditions() {
        assert_eq!(state(None), JobState::Absent);
        assert_eq!(state(Some(&Job::default())), JobState::Running);
        assert_eq!(state(Some(&finished("Complete"))), JobState::Succeeded);
        assert_eq!(
            state(Some(&finished("Failed"))),
            JobState::Failed("BackoffLimitExceeded".into())
        );
    }
}
