//! `larder index build` (for a CronJob) and `larder index query` (a client's answers).

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::index::build::{BuildOptions, BuildSummary};
use crate::index::plan::JournalTiming;

use super::store::StoreArgs;
use super::CliError;

/// Where Kubernetes reads a container's termination message from.
const TERMINATION_LOG: &str = "/dev/termination-log";

/// Arguments of `larder index`.
#[derive(Debug, Args)]
pub struct IndexArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: IndexCommand,
}

/// Subcommands of `larder index`; each one's help is the doc of its arguments.
#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    Build(Box<BuildArgs>),
    Query(super::index_query::QueryArgs),
}

/// Build the next epoch of the binary cache index (RFC 0195) and publish it
///
/// Reads the database, writes the index files next to the cache's objects and switches
/// the manifest; exclusive across replicas, safe beside pushes and GC. Meant for a
/// CronJob; `larder serve` keeps the journal between builds up to date by itself.
///
/// Example:
///
///   larder index build --public-url http://127.0.0.1:5050 --data-dir larder-data
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct BuildArgs {
    /// URL the cache is read from; the manifest's index URLs start with it.
    #[arg(long, env = "LARDER_PUBLIC_URL", value_name = "URL", value_parser = super::values::http_url)]
    pub public_url: String,
    /// Keep a retired epoch's files this long (clients may still hold an older manifest;
    /// the format asks for at least 10 minutes).
    #[arg(long, env = "LARDER_INDEX_GRACE", default_value = "15m",
          value_parser = super::values::duration)]
    pub grace: Duration,
    /// False-positive rate of the Bloom filter (`bloom.bin`).
    #[arg(long, env = "LARDER_INDEX_BLOOM_RATE", default_value_t = 0.01,
          value_parser = super::values::rate)]
    pub bloom_rate: f64,
    /// Shard files written at once (object stores answer small PUTs slowly, not rarely).
    #[arg(long, short = 'j', env = "LARDER_INDEX_JOBS", default_value_t = 64,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Print only the JSON summary on stdout (it is always the last line).
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `larder index …`.
pub async fn run(args: IndexArgs) -> Result<(), CliError> {
    match args.command {
        IndexCommand::Build(args) => build(*args).await,
        IndexCommand::Query(args) => super::index_query::run(args).await,
    }
}

async fn build(args: BuildArgs) -> Result<(), CliError> {
    if args.grace < Duration::from_secs(600) {
        tracing::warn!(
            "--grace {} is below the 10 minutes the index format asks for",
            humantime::format_duration(args.grace)
        );
    }
    let db = args.store.db.connect_existing_db().await?;
    db.check_schema().await?;
    let storage = args.store.open_storage(&args.public_url).await?;
    let options = BuildOptions {
        public_url: args.public_url.clone(),
        timing: JournalTiming::default(),
        grace: args.grace,
        bloom_rate: args.bloom_rate,
        concurrency: usize::from(args.jobs),
        progress: !args.json && std::io::stderr().is_terminal(),
    };
    let summary = crate::index::build::run(&db, &storage, &options)
        .await
        .map_err(|e| CliError::Message(format!("index build failed: {e}")))?;
    report(&summary, args.json);
    Ok(())
}

fn report(summary: &BuildSummary, json_only: bool) {
    let line = serde_json::to_string(summary).unwrap_or_else(|_| "{}".into());
    if !json_only {
        eprintln!(
            "index: epoch {} (previous {}) of {} paths in {} shards at depth {}: {} bytes \
             stored, {} deltas; {} old epochs removed; {} ms",
            summary.epoch,
            summary.previous,
            summary.item_count,
            summary.shards,
            summary.depth,
            summary.stored_bytes,
            summary.deltas,
            summary.epochs_removed,
            summary.duration_ms
        );
    }
    println!("{line}");
    if std::path::Path::new(TERMINATION_LOG).exists() {
        // Kubernetes shows this in the pod's status; the operator reads it from there.
        let _ = std::fs::write(TERMINATION_LOG, &line);
    }
}
