//! `larder gc`: one garbage collection run, for CronJobs and cron.

use std::time::Duration;

use clap::Args;

use crate::gc::{GcOptions, GcSummary};

use super::store::StoreArgs;
use super::CliError;

/// Where Kubernetes reads a container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Collect garbage once: expire old roots, delete what no root reaches
///
/// A root (the closure of a push) expires when nothing pushed it again for
/// --older-than; pins never expire. Objects no live root, pin or unfinished upload
/// reaches are marked, and deleted once they have stayed marked for --grace, so a push
/// racing a collection never loses what it relies on (docs/gc.md). Prints a summary
/// on stderr; the last line on stdout is always the JSON summary.
///
/// Examples:
///
///   larder gc --older-than 30d --data-dir larder-data --dry-run
///
///   larder gc --older-than 30d --database postgres://larder@db/larder --storage s3://my-cache
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct GcArgs {
    /// Expire roots not pushed for this long (pins never expire), e.g. `720h` or `30d`.
    #[arg(long, env = "LARDER_GC_OLDER_THAN", value_parser = super::values::duration)]
    pub older_than: Duration,
    /// Abandon upload sessions started this long ago.
    #[arg(long, env = "LARDER_GC_FAILED_UPLOADS_OLDER_THAN", default_value = "6h",
          value_parser = super::values::duration)]
    pub failed_uploads_older_than: Duration,
    /// Keep unreachable objects this long after marking before deleting them.
    #[arg(long, env = "LARDER_GC_GRACE", default_value = "1h", value_parser = super::values::duration)]
    pub grace: Duration,
    /// Report what would be collected; change nothing.
    #[arg(long, env = "LARDER_GC_DRY_RUN")]
    pub dry_run: bool,
    /// Print only the JSON summary on stdout (it is always the last line).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs a collection and prints its summary.
pub async fn run(args: GcArgs) -> Result<(), CliError> {
    let url_lifetime = crate::server::state::PRESIGN_TTL;
    if args.failed_uploads_older_than < url_lifetime {
        tracing::warn!(
            "--failed-uploads-older-than {} is shorter than the lifetime of upload URLs ({}): \
             a slow client may still upload after its session is cleaned, and those bytes \
             would stay in the bucket untracked",
            humantime::format_duration(args.failed_uploads_older_than),
            humantime::format_duration(url_lifetime)
        );
    }
    let db = args.store.db.connect_existing_db().await?;
    db.check_schema().await?;
    let storage = args.store.open_storage("http://127.0.0.1").await?;
    let options = GcOptions {
        older_than: args.older_than,
        failed_uploads_older_than: args.failed_uploads_older_than,
        grace: args.grace,
        dry_run: args.dry_run,
    };
    let summary = crate::gc::run(&db, &storage, &options)
        .await
        .map_err(|e| CliError::Message(format!("gc failed: {e}")))?;
    report(&summary, args.json);
    Ok(())
}

fn report(summary: &GcSummary, json_only: bool) {
    let line = serde_json::to_string(summary).unwrap_or_else(|_| "{}".into());
    if !json_only {
        eprintln!(
            "{}: {} roots expired, {} objects marked, {} deleted ({} bytes), {} failures in {} ms",
            if summary.dry_run {
                "gc (dry run)"
            } else {
                "gc"
            },
            summary.roots_expired,
            summary.objects_marked,
            summary.objects_deleted,
            summary.bytes_deleted,
            summary.failures,
            summary.duration_ms
        );
        if summary.uploads_not_aborted > 0 {
            eprintln!(
                "gc: {} multipart uploads of abandoned sessions could not be aborted (see the \
                 warnings above); the bucket's lifecycle rule for incomplete uploads removes them",
                summary.uploads_not_aborted
            );
        }
    }
    println!("{line}");
    if std::path::Path::new(TERMINATION_LOG).exists() {
        // Kubernetes shows this in the pod's status; the operator reads it from there.
        let _ = std::fs::write(TERMINATION_LOG, &line);
    }
}
