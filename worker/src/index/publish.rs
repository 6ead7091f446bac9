//! The journal publisher. Every worker ticks once a second; the one that gets the journal
//! lock assigns newly committed changes to the writer's segment, rewrites that segment
//! file, adds new paths to the Bloom filter, and moves the manifest to a new segment on
//! time. So a committed path is in the published journal about a second later, however
//! many workers run. docs/index.md has the protocol.

use std::time::Duration;

use ruint::aliases::U160;
use sqlx::{Any, Transaction};
use thiserror::Error;
use time::OffsetDateTime;

use super::bloom::{BloomError, BloomFilter};
use super::files::{self, FileError, MAX_FILE};
use super::hash::parse_hash;
use super::journal::{render_segment, Change, Op};
use super::paths::IndexFile;
use super::plan::{self, JournalTiming, PlanError};
use crate::db::journal::{self, JournalRow, WriterState};
use crate::db::{index_epochs, Db, DbError};
use crate::storage::Storage;

/// Rows published per tick at most (a backlog drains over several ticks).
const ASSIGN_LIMIT: i64 = 100_000;

/// What the publisher needs besides the database and the store.
#[derive(Debug, Clone)]
pub struct PublisherConfig {
    /// The cache's public URL (index URLs in the manifest start with it).
    pub public_url: String,
    /// Segment length, retention, lag.
    pub timing: JournalTiming,
    /// Time between ticks.
    pub interval: Duration,
}

/// Why a tick failed (it is retried on the next).
#[derive(Debug, Error)]
pub enum PublishError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("bloom.bin: {0}")]
    Bloom(#[from] BloomError),
    #[error("manifest: {0}")]
    Plan(#[from] PlanError),
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Changes newly written into the journal.
    pub published: usize,
    /// The segment they went to.
    pub segment: i64,
    /// Whether the manifest was rewritten to name a new segment.
    pub manifest_written: bool,
}

/// One row as a journal change; rows the database should never hold are skipped.
fn change(row: &JournalRow) -> Option<Change> {
    let op = match row.op.as_str() {
        "+" => Op::Add,
        "-" => Op::Remove,
        _ => return None,
    };
    Some(Change {
        op,
        hash: parse_hash(&row.hash).ok()?,
    })
}

/// Publishes what is waiting, unless another worker holds the journal lock (`None`).
pub async fn tick(
    db: &Db,
    storage: &Storage,
    config: &PublisherConfig,
    now: OffsetDateTime,
) -> Result<Option<TickReport>, PublishError> {
    let Some(mut tx) = journal::begin_locked(db, false).await? else {
        return Ok(None);
    };
    let before = journal::writer_state(&mut tx).await?;
    let after = plan::advance(before, now.unix_timestamp(), &config.timing);
    let new = journal::assign(&mut tx, after.writer_segment, ASSIGN_LIMIT).await?;
    if !new.is_empty() {
        let rows = journal::segment_rows(&mut tx, after.writer_segment).await?;
        let changes: Vec<Change> = rows.iter().filter_map(change).collect();
        let file = IndexFile::Journal {
            segment: u64::try_from(after.writer_segment).unwrap_or(0),
        };
        files::put(storage, &file, render_segment(&changes).into_bytes()).await?;
        let added: Vec<U160> = new
            .iter()
            .filter_map(change)
            .filter(|c| c.op == Op::Add)
            .map(|c| c.hash)
            .collect();
        add_to_bloom(storage, &added).await?;
    }
    let mut manifest_written = false;
    if after.manifest_segment != before.manifest_segment {
        manifest_written = write_manifest(&mut tx, storage, &after, config, now).await?;
    }
    if after != before {
        journal::set_writer_state(&mut tx, &after).await?;
    }
    tx.commit().await.map_err(|source| DbError::Query {
        context: "commit a journal write",
        source,
    })?;
    Ok(Some(TickReport {
        published: new.len(),
        segment: after.writer_segment,
        manifest_written,
    }))
}

/// Writes `manifest.json` for the published epochs and the journal at `state`, or
/// removes it when the journal no longer reaches back to the shards' snapshot. Call
/// holding the journal lock. Returns whether an index is now published.
pub async fn write_manifest(
    tx: &mut Transaction<'static, Any>,
    storage: &Storage,
    state: &WriterState,
    config: &PublisherConfig,
    now: OffsetDateTime,
) -> Result<bool, PublishError> {
    let (current, previous) = index_epochs::published(&mut **tx).await?;
    let Some(current) = current else {
        return Ok(false);
    };
    match plan::manifest(
        &current,
        previous.as_ref(),
        state,
        &config.timing,
        &config.public_url,
        now,
    ) {
        Ok(m) => {
            files::put(storage, &IndexFile::Manifest, m.to_json().into_bytes()).await?;
            Ok(true)
        }
        Err(e @ PlanError::Stale { .. }) => {
            // A manifest whose journal misses changes would answer "absent" for paths
            // the cache has: no index is better than a wrong one.
            tracing::error!("withdrawing the binary cache index: {e}");
            files::delete(storage, &[IndexFile::Manifest.key()]).await?;
            Ok(false)
        }
        Err(e) => Err(e.into()),
    }
}

/// Sets the bits of `hashes` in the published Bloom filter, if there is one.
pub async fn add_to_bloom(storage: &Storage, hashes: &[U160]) -> Result<(), PublishError> {
    if hashes.is_empty() {
        return Ok(());
    }
    let Some(bytes) = files::get(storage, &IndexFile::Bloom, MAX_FILE).await? else {
        return Ok(());
    };
    let mut bloom = BloomFilter::parse(&bytes)?;
    if hashes.iter().all(|&h| bloom.contains(h)) {
        return Ok(());
    }
    hashes.iter().for_each(|&h| bloom.insert(h));
    files::put(storage, &IndexFile::Bloom, bloom.to_bytes()).await?;
    Ok(())
}

/// Ticks forever (for `larder serve`); failures are logged and retried.
pub async fn run(db: Db, storage: Storage, config: PublisherConfig) {
    let mut interval = tokio::time::interval(config.interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match tick(&db, &storage, &config, OffsetDateTime::now_utc()).await {
            Ok(Some(report)) if report.published > 0 => tracing::debug!(
                published = report.published,
                segment = report.segment,
                "journal published"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!("journal publisher: {e}"),
        }
    }
}
