//! The CronJob running `larder index build`.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{child_meta, labels, names, pod, CacheView, Component};

/// Longest an index build may take before Kubernetes stops it (builds take minutes).
pub const INDEX_DEADLINE_SECONDS: i64 = 2 * 3_600;

/// The index CronJob running `image`, or none when the index is disabled.
pub fn build(cache: &CacheView, image: &str) -> Option<CronJob> {
    let index = &cache.spec.index;
    if !index.enabled {
        return None;
    }
    let process = pod::Process {
        args: vec!["index".into(), "build".into()],
        signing_key: false,
        push_tokens: false,
    };
    let mut pod_spec = pod::spec(cache.name, cache.spec, image, &process);
    pod_spec.restart_policy = Some("OnFailure".into());
    let pod_labels = labels(cache.name, Component::Index);
    Some(CronJob {
        metadata: child_meta(
            names::index_cronjob(cache.name),
            cache.namespace,
            pod_labels.clone(),
            Some(&cache.owner),
        ),
        spec: Some(CronJobSpec {
            schedule: index.schedule.clone(),
            // A build overlapping the previous one would only redo its work.
            concurrency_policy: Some("Forbid".into()),
            // Never built for a suspended cache: controller/suspend.rs suspends the CronJob
            // without applying the rest, and resuming applies this again.
            suspend: Some(false),
            successful_jobs_history_limit: Some(1),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    // With Forbid, a build that hangs would block every later one; a killed
                    // build leaves the published index as it was.
                    active_deadline_seconds: Some(INDEX_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(pod_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod_spec),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;

    #[test]
    fn index_cronjob_runs_index_build_on_schedule() {
        let cache = fixtures::full();
        let cj = build(&fixtures::view(&cache, "http://x"), "larder:1").unwrap();
        assert_eq!(cj.metadata.name.as_deref(), Some("main-index"));
        let spec = cj.spec.unwrap();
        assert_eq!(spec.schedule, "0 * * * *");
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let job = spec.job_template.spec.as_ref().unwrap();
        assert_eq!(job.active_deadline_seconds, Some(INDEX_DEADLINE_SECONDS));
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        assert_eq!(
            pod.containers[0].args,
            Some(vec!["index".to_string(), "build".to_string()])
        );
    }

    #[test]
    fn disabled_index_has_no_cronjob() {
        let cache = fixtures::irsa();
        assert_eq!(build(&fixtures::view(&cache, "http://x"), "larder:1"), None);
    }
}
