//! `GCPolicy`: when and how a cache's garbage collector runs.
// kube's printcolumn(...) repeats `type_ = ...`, which clippy mistakes for duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A duration as `larder gc` accepts it (`720h`, `30d`, `1h30m`, `1.5h`).
const DURATION_PATTERN: &str = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h|d|w))+$";

/// Desired garbage collection of one cache.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "larder.dev",
    version = "v1alpha1",
    kind = "GCPolicy",
    plural = "gcpolicies",
    namespaced,
    shortname = "gcp",
    category = "larder",
    status = "GCPolicyStatus",
    derive = "PartialEq",
    doc = "Scheduled garbage collection of a BinaryCache.",
    printcolumn(name = "Cache", type_ = "string", json_path = ".spec.cacheRef.name"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Run",
        type_ = "date",
        json_path = ".status.lastScheduleTime"
    ),
    printcolumn(
        name = "Last Result",
        type_ = "string",
        json_path = ".status.lastRun.result"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct GCPolicySpec {
    /// The BinaryCache in the same namespace to collect.
    pub cache_ref: CacheRef,
    /// Cron schedule of the collector.
    #[schemars(regex(
        pattern = r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$"
    ))]
    pub schedule: String,
    /// IANA time zone of the schedule; the controller manager's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub time_zone: Option<String>,
    /// Closures not pushed for this long stop being roots (`--older-than`).
    #[serde(default = "default_retention")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub retention: String,
    /// Unfinished uploads older than this are abandoned (`--failed-uploads-older-than`).
    #[serde(default = "default_failed_upload_grace")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub failed_upload_grace: String,
    /// Report what would be deleted without deleting.
    #[serde(default)]
    pub dry_run: bool,
    /// Stop scheduling runs; a running one finishes. Runs also stop while the cache is suspended.
    #[serde(default)]
    pub suspend: bool,
}

fn default_retention() -> String {
    "720h".into()
}

fn default_failed_upload_grace() -> String {
    "6h".into()
}

/// A reference to a BinaryCache in the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheRef {
    /// Name of the BinaryCache.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Observed state of a GC policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GCPolicyStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing` and `Degraded`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// When the CronJob last started a run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    /// The newest finished run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run: Option<GcRun>,
}

/// One finished collector run.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcRun {
    /// The Job that ran it.
    pub job_name: String,
    /// `Succeeded` or `Failed`.
    pub result: GcResult,
    /// When the run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completion_time: Option<Time>,
    /// What the collector reported; absent when it wrote no summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<GcSummary>,
    /// Why the run failed, or why its summary could not be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Outcome of a run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum GcResult {
    /// The Job completed.
    Succeeded,
    /// The Job failed.
    Failed,
}

/// The one-line JSON summary `larder gc` prints last and writes to its termination message;
/// reported in camelCase, read in the worker's snake_case.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct GcSummary {
    /// The run changed nothing.
    #[serde(default, alias = "dry_run")]
    pub dry_run: bool,
    /// Abandoned upload sessions removed.
    #[serde(default, alias = "stale_sessions")]
    pub stale_sessions: u64,
    /// Roots that aged out.
    #[serde(default, alias = "roots_expired")]
    pub roots_expired: u64,
    /// Objects found unreachable in this run.
    #[serde(default, alias = "objects_marked")]
    pub objects_marked: u64,
    /// Their size in bytes.
    #[serde(default, alias = "bytes_marked")]
    pub bytes_marked: i64,
    /// Objects deleted from the bucket and the database.
    #[serde(default, alias = "objects_deleted")]
    pub objects_deleted: u64,
    /// Bytes those objects held.
    #[serde(default, alias = "bytes_deleted")]
    pub bytes_deleted: i64,
    /// Deletions the bucket refused; retried next run.
    #[serde(default)]
    pub failures: u64,
    /// Wall time of the run in milliseconds.
    #[serde(default, alias = "duration_ms")]
    pub duration_ms: u64,
}
