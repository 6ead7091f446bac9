//! `larder fsck`: check that the bucket holds everything live roots and pins reach.

use std::io::IsTerminal;

use clap::Args;

use crate::gc::fsck::{FsckOptions, FsckReport};

use super::store::StoreArgs;
use super::CliError;

/// Keys listed per problem in the human report (all of them are in `--json`).
const SHOWN: usize = 10;

/// Check that every object a live root or pin reaches is in the bucket
///
/// Exits 0 when everything is there, 1 when anything is missing or wrong. Safe to run
/// while the cache serves and pushes: it only reads.
///
/// Examples:
///
///   larder fsck --data-dir larder-data
///
///   larder fsck --database postgres://… --storage s3://cache --sizes --json
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct FsckArgs {
    /// Also compare stored sizes with the sizes pushers declared.
    #[arg(long)]
    pub sizes: bool,
    /// Also download every object whose hash was declared and verify it (reads everything).
    #[arg(long)]
    pub checksums: bool,
    /// Print the report as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs the check and prints its report.
pub async fn run(args: FsckArgs) -> Result<(), CliError> {
    let db = args.store.db.connect_existing_db().await?;
    db.check_schema().await?;
    let storage = args.store.open_storage("http://127.0.0.1").await?;
    let options = FsckOptions {
        sizes: args.sizes,
        checksums: args.checksums,
    };
    let bar = (options.checksums && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_style(
            indicatif::ProgressStyle::with_template("{spinner} verified {bytes} ({bytes_per_sec})")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        );
        bar
    });
    let report = crate::gc::fsck::run(&db, &storage, options, &|n| {
        if let Some(bar) = &bar {
            bar.inc(n);
        }
    })
    .await
    .map_err(|e| CliError::Message(format!("fsck failed: {e}")))?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).unwrap_or_else(|_| "{}".into())
        );
    }
    print_human(&report);
    if report.is_clean() {
        Ok(())
    } else {
        Err(CliError::Message(
            "the cache is missing objects live roots need".into(),
        ))
    }
}

fn print_human(report: &FsckReport) {
    eprintln!("fsck: {} live object(s) checked", report.live_objects);
    for (what, keys) in [
        ("referenced but never committed", &report.missing_rows),
        ("missing from the bucket", &report.missing_objects),
        (
            "with a different size than declared",
            &report.size_mismatches,
        ),
        (
            "with a different hash than declared",
            &report.checksum_mismatches,
        ),
    ] {
        if keys.is_empty() {
            continue;
        }
        eprintln!("  {} object(s) {what}:", keys.len());
        for key in keys.iter().take(SHOWN) {
            eprintln!("    {key}");
        }
        if keys.len() > SHOWN {
            eprintln!("    … and {} more (see --json)", keys.len() - SHOWN);
        }
    }
    if report.is_clean() {
        eprintln!("fsck: ok");
    }
}
