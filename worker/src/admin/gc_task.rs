//! The one GC run the admin API may have in flight: niks3's task semantics, decided
//! purely. A request with the same parameters as the running task joins it; different
//! parameters conflict; a finished task stays visible until the next one starts.

use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::gc::GcSummary;

/// Parameters of a run, as given in the query string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GcParams {
    /// Roots not pushed for this long expire.
    pub older_than: String,
    /// Upload sessions older than this are abandoned.
    pub failed_uploads_older_than: String,
    /// Delete without a grace period.
    pub force: bool,
}

/// niks3's run counters, named as its client expects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcStats {
    pub failed_uploads_deleted: u64,
    pub old_closures_deleted: u64,
    pub objects_marked_for_deletion: u64,
    pub objects_deleted_after_grace_period: u64,
    pub objects_failed_to_delete: u64,
    /// Larder: bytes the deleted objects held.
    pub bytes_deleted: i64,
}

impl From<&GcSummary> for GcStats {
    fn from(s: &GcSummary) -> Self {
        GcStats {
            failed_uploads_deleted: s.stale_sessions,
            old_closures_deleted: s.roots_expired,
            objects_marked_for_deletion: s.objects_marked,
            objects_deleted_after_grace_period: s.objects_deleted,
            objects_failed_to_delete: s.failures,
            bytes_deleted: s.bytes_deleted,
        }
    }
}

/// Where a task is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskState {
    Running,
    Succeeded,
    Failed,
}

/// A task's snapshot: the JSON of `GET /api/gc/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskStatus {
    pub state: TaskState,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<&'static str>,
    pub params: GcParams,
    pub stats: GcStats,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub started_at: String,
    pub updated_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

/// What a start request gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// A new task: the caller must run it.
    New(TaskStatus),
    /// The running task has these parameters: join it.
    Joined(TaskStatus),
    /// A different task is running.
    Conflict(TaskStatus),
}

/// Decides what a start request does, given the current task.
pub fn decide(current: Option<&TaskStatus>, params: GcParams, now: String) -> Start {
    match current {
        Some(task) if task.state == TaskState::Running && task.params == params => {
            Start::Joined(task.clone())
        }
        Some(task) if task.state == TaskState::Running => Start::Conflict(task.clone()),
        _ => Start::New(TaskStatus {
            state: TaskState::Running,
            phase: Some("collecting"),
            params,
            stats: GcStats::default(),
            error: None,
            started_at: now.clone(),
            updated_at: now,
            finished_at: None,
        }),
    }
}

/// The current (or last) task of this worker.
#[derive(Debug, Clone, Default)]
pub struct GcTasks {
    current: Arc<Mutex<Option<TaskStatus>>>,
}

impl GcTasks {
    /// Applies [`decide`] atomically; a new task becomes current.
    pub fn start(&self, params: GcParams, now: String) -> Start {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let start = decide(current.as_ref(), params, now);
        if let Start::New(task) = &start {
            *current = Some(task.clone());
        }
        start
    }

    /// The current task's snapshot.
    pub fn status(&self) -> Option<TaskStatus> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Ends the current task with a result.
    pub fn finish(&self, result: Result<&GcSummary, String>, now: String) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(task) = current.as_mut() {
            match result {
                Ok(summary) => {
                    task.state = TaskState::Succeeded;
                    task.stats = GcStats::from(summary);
                }
                Err(message) => {
                    task.state = TaskState::Failed;
                    task.error = Some(message);
                }
            }
            task.phase = None;
            task.updated_at = now.clone();
            task.finished_at = Some(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(older: &str) -> GcParams {
        GcParams {
            older_than: older.into(),
            failed_uploads_older_than: "6h".into(),
            force: false,
        }
    }

    #[test]
    fn same_parameters_join_different_ones_conflict_finished_ones_restart() {
        let tasks = GcTasks::default();
        assert!(tasks.status().is_none());
        let Start::New(first) = tasks.start(params("720h"), "t0".into()) else {
            panic!("first start must be new");
        };
        assert_eq!(first.state, TaskState::Running);
        assert!(matches!(tasks.start(params("720h"), "t1".into()), Start::Joined(t) if t == first));
        assert!(matches!(tasks.start(params("1h"), "t1".into()), Start::Conflict(t) if t == first));

        let summary = GcSummary {
            roots_expired: 3,
            objects_deleted: 7,
            ..GcSummary::default()
        };
        tasks.finish(Ok(&summary), "t2".into());
        let done = tasks.status().unwrap();
        assert_eq!(done.state, TaskState::Succeeded);
        assert_eq!(done.stats.old_closures_deleted, 3);
        assert_eq!(done.stats.objects_deleted_after_grace_period, 7);
        assert_eq!(done.finished_at.as_deref(), Some("t2"));
        assert!(matches!(
            tasks.start(params("1h"), "t3".into()),
            Start::New(_)
        ));
    }

    #[test]
    fn a_failed_task_reports_its_error_in_niks3_json() {
        let tasks = GcTasks::default();
        tasks.start(params("1h"), "t0".into());
        tasks.finish(Err("bucket unreachable".into()), "t1".into());
        let json = serde_json::to_value(tasks.status().unwrap()).unwrap();
        assert_eq!(json["state"], "failed");
        assert_eq!(json["error"], "bucket unreachable");
        assert_eq!(json["params"]["older_than"], "1h");
        assert_eq!(json["stats"]["objects_failed_to_delete"], 0);
        assert!(json.get("phase").is_none());
    }
}
