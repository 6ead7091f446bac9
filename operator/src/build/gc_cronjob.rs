//! The CronJob of a GCPolicy, running `larder gc` against its cache.

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use super::{child_meta, labels, names, pod, Component, GC_POLICY_LABEL};
use crate::crd::{BinaryCacheSpec, GCPolicySpec};

/// A GC policy as the builder sees it, with the cache it collects.
#[derive(Clone, Debug, PartialEq)]
pub struct GcView<'a> {
    /// Name of the GCPolicy.
    pub name: &'a str,
    /// Its namespace (also the cache's).
    pub namespace: &'a str,
    /// Controller owner reference pointing at the GCPolicy.
    pub owner: OwnerReference,
    /// The policy.
    pub spec: &'a GCPolicySpec,
    /// Name of the collected cache.
    pub cache: &'a str,
    /// The collected cache's spec.
    pub cache_spec: &'a BinaryCacheSpec,
    /// Image to run: the one the cache's database was migrated for.
    pub image: &'a str,
}

/// Longest a GC run may take before Kubernetes stops it: far beyond a run over millions
/// of paths (minutes; docs/benchmarks.md), short enough that a hung one frees the
/// schedule the same day.
pub const GC_DEADLINE_SECONDS: i64 = 6 * 3_600;

/// The `larder` arguments of one run.
pub fn args(spec: &GCPolicySpec) -> Vec<String> {
    let mut args = vec![
        "gc".to_string(),
        "--older-than".to_string(),
        spec.retention.clone(),
        "--failed-uploads-older-than".to_string(),
        spec.failed_upload_grace.clone(),
    ];
    if spec.dry_run {
        args.push("--dry-run".into());
    }
    args
}

/// Labels of the CronJob, its Jobs and their pods; the policy label finds runs again.
pub fn run_labels(policy: &str, cache: &str) -> std::collections::BTreeMap<String, String> {
    let mut labels = labels(cache, Component::Gc);
    labels.insert(GC_POLICY_LABEL.to_string(), policy.to_string());
    labels
}

/// The CronJob running the collector on the policy's schedule.
pub fn build(gc: &GcView) -> CronJob {
    let process = pod::Process {
        args: args(gc.spec),
        signing_key: false,
        push_tokens: false,
    };
    let mut pod_spec = pod::spec(gc.cache, gc.cache_spec, gc.image, &process);
    // Failed pods stay, so their termination message (the run summary) can be read.
    pod_spec.restart_policy = Some("Never".into());
    let run_labels = run_labels(gc.name, gc.cache);
    CronJob {
        metadata: child_meta(
            names::gc_cronjob(gc.name),
            gc.namespace,
            run_labels.clone(),
            Some(&gc.owner),
        ),
        spec: Some(CronJobSpec {
            schedule: gc.spec.schedule.clone(),
            time_zone: gc.spec.time_zone.clone(),
            // Runs are exclusive anyway (a database lock); two would only queue on it.
            concurrency_policy: Some("Forbid".into()),
            // A suspended cache stops its collection too (docs/operator.md).
            suspend: Some(gc.spec.suspend || gc.cache_spec.suspend),
            starting_deadline_seconds: Some(3_600),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(run_labels.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(JobSpec {
                    backoff_limit: Some(1),
                    // With Forbid, a run that hangs (a stuck connection) would block every
                    // later one. A killed run is safe to rerun (DESIGN.md, GC invariants).
                    active_deadline_seconds: Some(GC_DEADLINE_SECONDS),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(run_labels),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(pod_spec),
                    },
                    ..JobSpec::default()
                }),
            },
        }),
        ..CronJob::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures;
    use kube::Resource;

    #[test]
    fn dry_run_policy_args() {
        let policy = fixtures::gc_policy();
        assert_eq!(
            args(&policy.spec),
            [
                "gc",
                "--older-than",
                "2160h",
                "--failed-uploads-older-than",
                "12h",
                "--dry-run"
            ]
        );
        let mut real = policy.spec.clone();
        real.dry_run = false;
        assert!(!args(&real).contains(&"--dry-run".to_string()));
    }

    #[test]
    fn cronjob_forbids_overlap_and_carries_the_policy_label() {
        let policy = fixtures::gc_policy();
        let cache = fixtures::minimal();
        let view = GcView {
            name: "nightly",
            namespace: "nix",
            owner: policy.controller_owner_ref(&()).unwrap(),
            spec: &policy.spec,
            cache: "main",
            cache_spec: &cache.spec,
            image: "larder:1",
        };
        let cj = build(&view);
        assert_eq!(cj.metadata.name.as_deref(), Some("nightly-gc"));
        assert_eq!(cj.spec.as_ref().unwrap().suspend, Some(false));
        let mut suspended = cache.spec.clone();
        suspended.suspend = true;
        let paused = build(&GcView {
            cache_spec: &suspended,
            ..view.clone()
        });
        assert_eq!(paused.spec.unwrap().suspend, Some(true));
        let spec = cj.spec.unwrap();
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let job = spec.job_template.spec.as_ref().unwrap();
        assert_eq!(job.active_deadline_seconds, Some(GC_DEADLINE_SECONDS));
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        let job_labels = spec.job_template.metadata.unwrap().labels.unwrap();
        assert_eq!(job_labels[GC_POLICY_LABEL], "nightly");
        let pod = spec.job_template.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("main"));
        assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    }
}
