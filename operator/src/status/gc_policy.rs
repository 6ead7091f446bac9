//! The status of a `GCPolicy`: schedule, the newest finished run and its summary.

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::conditions::{merge, Decided, DEGRADED, PROGRESSING, READY};
use crate::build::pod::CONTAINER;
use crate::crd::{GCPolicyStatus, GcResult, GcRun, GcSummary};
use crate::validate::InvalidGcPolicy;

/// Why a reconcile of a policy stopped short: validation failed, or the API server refused
/// its CronJob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// CamelCase condition reason.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
}

impl From<&InvalidGcPolicy> for Failure {
    fn from(invalid: &InvalidGcPolicy) -> Self {
        Self {
            reason: invalid.reason(),
            message: invalid.to_string(),
        }
    }
}

/// Label the Job controller puts on a Job's pods.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";

/// The newest finished run among `jobs`, with its summary from the pods' termination messages.
pub fn last_run(jobs: &[Job], pods: &[Pod]) -> Option<GcRun> {
    let (job, result, finished) = jobs
        .iter()
        .filter_map(|job| finished(job).map(|(result, time)| (job, result, time)))
        .max_by(|a, b| a.2.as_ref().map(|t| t.0).cmp(&b.2.as_ref().map(|t| t.0)))?;
    let job_name = job.metadata.name.clone().unwrap_or_default();
    let message = termination_message(&job_name, pods);
    let (summary, note) = match message.as_deref().map(parse_summary) {
        Some(Ok(summary)) => (Some(summary), None),
        Some(Err(e)) => (None, Some(e)),
        None => (
            None,
            Some("the run left no termination message".to_string()),
        ),
    };
    let failure = (result == GcResult::Failed)
        .then(|| failed_message(job))
        .flatten();
    Some(GcRun {
        job_name,
        result,
        completion_time: finished,
        summary,
        message: failure.or(note),
    })
}

/// Parses the one-line JSON summary `larder gc` writes as its termination message.
pub fn parse_summary(message: &str) -> Result<GcSummary, String> {
    // With FallbackToLogsOnError the message may be log lines; the summary is the last line.
    let line = message.trim().lines().last().unwrap_or_default();
    serde_json::from_str(line).map_err(|e| format!("unreadable run summary ({e}): {line:.200}"))
}

fn finished(job: &Job) -> Option<(GcResult, Option<Time>)> {
    let status = job.status.as_ref()?;
    status.conditions.iter().flatten().find_map(|c| {
        let result = match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => GcResult::Succeeded,
            ("Failed", "True") => GcResult::Failed,
            _ => return None,
        };
        let time = status
            .completion_time
            .clone()
            .or_else(|| c.last_transition_time.clone());
        Some((result, time))
    })
}

fn failed_message(job: &Job) -> Option<String> {
    job.status
        .as_ref()?
        .conditions
        .iter()
        .flatten()
        .find_map(|c| {
            (c.type_ == "Failed" && c.status == "True")
                .then(|| c.message.clone().or_else(|| c.reason.clone()))
                .flatten()
        })
}

/// The termination message of the job's newest terminated `larder` container.
fn termination_message(job: &str, pods: &[Pod]) -> Option<String> {
    pods.iter()
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(JOB_NAME_LABEL))
                .is_some_and(|j| j == job)
        })
        .filter_map(|p| {
            let statuses = p.status.as_ref()?.container_statuses.as_ref()?;
            let terminated = statuses
                .iter()
                .find(|s| s.name == CONTAINER)?
                .state
                .as_ref()?
                .terminated
                .as_ref()?;
            Some((
                terminated.finished_at.as_ref().map(|t| t.0),
                terminated.message.clone()?,
            ))
        })
        .max_by_key(|(at, _)| *at)
        .map(|(_, message)| message)
}

/// The new status from the old one and what the reconcile saw.
pub fn compute(
    old: Option<&GCPolicyStatus>,
    generation: Option<i64>,
    outcome: Result<(&CronJob, Option<GcRun>), Failure>,
    now: &Time,
) -> GCPolicyStatus {
    let old = old.cloned().unwrap_or_default();
    let (decided, last_schedule_time, last_run) = match outcome {
        Err(err) => (
            vec![
                Decided::new(READY, false, err.reason, err.message.clone()),
                Decided::new(
                    PROGRESSING,
                    false,
                    err.reason,
                    "fix the problem to continue",
                ),
                Decided::new(DEGRADED, true, err.reason, err.message),
            ],
            old.last_schedule_time,
            old.last_run,
        ),
        Ok((cronjob, run)) => {
            let status = cronjob.status.clone().unwrap_or_default();
            let active = status.active.as_ref().is_some_and(|a| !a.is_empty());
            let run = run.or(old.last_run);
            let degraded = match &run {
                Some(r) if r.result == GcResult::Failed => Decided::new(
                    DEGRADED,
                    true,
                    "LastRunFailed",
                    format!(
                        "Job {} failed: {}",
                        r.job_name,
                        r.message.as_deref().unwrap_or("")
                    ),
                ),
                _ => Decided::new(DEGRADED, false, "AsExpected", ""),
            };
            let schedule = cronjob
                .spec
                .as_ref()
                .map(|s| s.schedule.clone())
                .unwrap_or_default();
            let suspended = cronjob
                .spec
                .as_ref()
                .and_then(|s| s.suspend)
                .unwrap_or(false);
            let ready = if suspended {
                Decided::new(
                    READY,
                    true,
                    "Suspended",
                    "spec.suspend is set on the policy or its cache; no runs are scheduled",
                )
            } else {
                Decided::new(READY, true, "Scheduled", format!("runs on {schedule:?}"))
            };
            let progressing = if active {
                Decided::new(PROGRESSING, true, "Running", "a collector run is active")
            } else {
                Decided::new(PROGRESSING, false, "Idle", "no run is active")
            };
            (
                vec![ready, progressing, degraded],
                status.last_schedule_time.or(old.last_schedule_time),
                run,
            )
        }
    };
    GCPolicyStatus {
        observed_generation: generation,
        conditions: merge(&old.conditions, &decided, generation, now),
        last_schedule_time,
        last_run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateTerminated, ContainerStatus, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    fn job(name: &str, type_: &str, finished: i64) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..ObjectMeta::default()
            },
            status: Some(JobStatus {
                completion_time: (type_ == "Complete").then(|| at(finished)),
                conditions: Some(vec![JobCondition {
                    type_: type_.into(),
                    status: "True".into(),
                    last_transition_time: Some(at(finished)),
                    message: (type_ == "Failed")
                        .then(|| "Job has reached the specified backoff limit".into()),
                    ..JobCondition::default()
                }]),
                ..JobStatus::default()
            }),
            ..Job::default()
        }
    }

    fn pod(job: &str, message: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                labels: Some([(JOB_NAME_LABEL.to_string(), job.to_string())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                container_statuses: Some(vec![ContainerStatus {
                    name: CONTAINER.into(),
                    state: Some(ContainerState {
                        terminated: Some(ContainerStateTerminated {
                            exit_code: 0,
                            message: Some(message.into()),
                            finished_at: Some(at(100)),
                            ..ContainerStateTerminated::default()
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        }
    }

    /// A line exactly as `larder gc` prints it.
    const SUMMARY: &str = r#"{"dry_run":false,"stale_sessions":1,"roots_expired":3,"objects_marked":120,"bytes_marked":2097152,"objects_deleted":40,"bytes_deleted":1048576,"failures":0,"duration_ms":2500}"#;

    #[test]
    fn newest_finished_run_with_its_summary() {
        let jobs = [
            job("gc-1", "Complete", 100),
            job("gc-2", "Complete", 200),
            Job::default(), // still running
        ];
        let pods = [pod("gc-1", "{}"), pod("gc-2", SUMMARY)];
        let run = last_run(&jobs, &pods).unwrap();
        assert_eq!(run.job_name, "gc-2");
        assert_eq!(run.result, GcResult::Succeeded);
        let summary = run.summary.unwrap();
        assert_eq!(summary.objects_deleted, 40);
        assert_eq!(summary.bytes_deleted, 1_048_576);
        assert_eq!(summary.duration_ms, 2500);
        assert_eq!(summary.stale_sessions, 1);
        assert_eq!(summary.bytes_marked, 2_097_152);
        assert!(!summary.dry_run);
        assert_eq!(run.message, None);
    }

    #[test]
    fn failed_run_carries_the_job_message() {
        let run = last_run(
            &[job("gc-3", "Failed", 300)],
            &[pod("gc-3", "panic: db gone")],
        )
        .unwrap();
        assert_eq!(run.result, GcResult::Failed);
        assert_eq!(run.summary, None);
        assert!(run.message.unwrap().contains("backoff limit"));
    }

    #[test]
    fn unreadable_summary_is_reported_not_fatal() {
        let run = last_run(&[job("gc-4", "Complete", 1)], &[pod("gc-4", "not json")]).unwrap();
        assert_eq!(run.summary, None);
        assert!(run.message.unwrap().contains("unreadable run summary"));
        let run = last_run(&[job("gc-5", "Complete", 1)], &[]).unwrap();
        assert!(run.message.unwrap().contains("no termination message"));
    }

    #[test]
    fn summary_is_the_last_log_line() {
        let s = parse_summary(&format!("starting\nmarking\n{SUMMARY}\n")).unwrap();
        assert_eq!(s.roots_expired, 3);
    }

    #[test]
    fn no_finished_run_no_last_run() {
        assert_eq!(last_run(&[Job::default()], &[]), None);
    }

    #[test]
    fn failed_last_run_degrades_the_policy() {
        let cronjob = CronJob::default();
        let run = last_run(&[job("gc-3", "Failed", 300)], &[]);
        let s = compute(None, Some(2), Ok((&cronjob, run)), &at(1));
        let degraded = s.conditions.iter().find(|c| c.type_ == DEGRADED).unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "LastRunFailed")
        );
        assert_eq!(s.last_run.unwrap().job_name, "gc-3");
    }

    #[test]
    fn invalid_policy_keeps_the_previous_run() {
        let cronjob = CronJob::default();
        let run = last_run(&[job("gc-1", "Complete", 100)], &[pod("gc-1", SUMMARY)]);
        let before = compute(None, Some(1), Ok((&cronjob, run)), &at(1));
        let err = InvalidGcPolicy::CacheNotFound("main".into());
        let after = compute(Some(&before), Some(2), Err((&err).into()), &at(2));
        let ready = after.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!(ready.reason, "CacheNotFound");
        assert_eq!(after.last_run, before.last_run);
    }
}
