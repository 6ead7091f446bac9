//! `larder index build`: epoch N+1 of the index from the database, exclusive across
//! replicas and safe beside pushes and GC.
//!
//! 1. Note the journal writer's segment (the floor): every change the snapshot misses is
//!    published in that segment or a later one, and the manifest keeps the journal back
//!    to the floor of the current and the previous epoch.
//! 2. Stream narinfo hashes in order into every shard of the new epoch (empty ones too),
//!    each with its delta from the current epoch; then the checksums file.
//! 3. Under the journal lock: publish the epoch, write the Bloom filter (the snapshot
//!    plus every addition since the floor), switch the manifest.
//! 4. Delete epochs retired longer than the grace period, and the journal before them.

pub mod cleanup;
pub mod group;
pub mod shards;

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use thiserror::Error;
use time::OffsetDateTime;

use super::bloom::{BloomError, BloomFilter};
use super::compress::CompressError;
use super::files::{self, FileError};
use super::hash::{parse_hash, Depth};
use super::header::ShardError;
use super::journal::JournalError;
use super::paths::IndexFile;
use super::plan::{self, JournalTiming};
use super::publish::{self, PublishError, PublisherConfig};
use crate::db::index_epochs::{self, EpochRow, BUILD_LOCK_ID};
use crate::db::journal;
use crate::db::lease::{Lease, LockName};
use crate::db::{now_ms, Db, DbError, QueryContext};
use crate::storage::{Storage, StorageError};

/// The build's run lock.
const BUILD_LOCK: LockName = LockName {
    id: BUILD_LOCK_ID,
    lease: "index_build_lease",
    lease_ms: 6 * 3600 * 1000,
};

/// How to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The cache's public URL (the manifest's URLs start with it).
    pub public_url: String,
    /// Journal segments and retention.
    pub timing: JournalTiming,
    /// How long a retired epoch's files stay (clients may hold an older manifest).
    pub grace: Duration,
    /// False-positive rate of the Bloom filter.
    pub bloom_rate: f64,
    /// Shards written at once.
    pub concurrency: usize,
    /// Draw a progress bar on stderr.
    pub progress: bool,
}

/// What a build did, printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct BuildSummary {
    /// The epoch written and now current.
    pub epoch: u64,
    /// The epoch now previous (0 = none).
    pub previous: u64,
    /// Sharding depth.
    pub depth: u8,
    /// Narinfos indexed.
    pub item_count: u64,
    /// Shard files written.
    pub shards: u64,
    /// Their decompressed size.
    pub shard_bytes: u64,
    /// Their stored (zstd) size.
    pub stored_bytes: u64,
    /// Delta files written.
    pub deltas: u64,
    /// Size of the Bloom filter file.
    pub bloom_bytes: u64,
    /// Retired epochs deleted (past the grace period).
    pub epochs_removed: u64,
    /// Files deleted with them, journal segments included.
    pub files_removed: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Why a build failed.
#[derive(Debug, Error)]
pub enum BuildError {
    #[error("another index build is running (the build lock is held)")]
    Busy,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("listing index files: {0}")]
    Storage(#[source] StorageError),
    #[error("shard {prefix}: {source}")]
    Shard {
        prefix: String,
        #[source]
        source: ShardError,
    },
    #[error("compressing {what}: {source}")]
    Compress {
        what: String,
        #[source]
        source: CompressError,
    },
    #[error("delta: {0}")]
    Delta(#[source] JournalError),
    #[error("Bloom filter: {0}")]
    Bloom(#[from] BloomError),
    #[error("the database returned {next} after {previous}: narinfo keys are not in byte order")]
    NotSorted { previous: String, next: String },
    #[error("objects holds a narinfo key that names no hash part: {0:?}")]
    BadKey(String),
    #[error("switching the manifest: {0}")]
    Publish(#[from] PublishError),
    #[error("the new manifest could not be written: {0}")]
    Manifest(String),
    #[error("{0}")]
    Task(String),
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

/// Builds and publishes the next epoch; `Busy` when another build holds the lock.
pub async fn run(
    db: &Db,
    storage: &Storage,
    options: &BuildOptions,
) -> Result<BuildSummary, BuildError> {
    let lock = Lease::acquire(db, BUILD_LOCK)
        .await?
        .ok_or(BuildError::Busy)?;
    let result = run_locked(db, storage, options).await;
    lock.release().await?;
    result
}

async fn run_locked(
    db: &Db,
    storage: &Storage,
    options: &BuildOptions,
) -> Result<BuildSummary, BuildError> {
    let started = Instant::now();
    // A build that crashed left an unpublished epoch: its files go after the grace period.
    index_epochs::retire_unfinished(db, now_ms()).await?;
    let epochs = index_epochs::all(db).await?;
    let epoch = epochs.iter().map(|e| e.epoch).max().unwrap_or(0) + 1;
    let (current, _) = index_epochs::published(db.pool()).await?;
    let floor = journal_floor_now(db, &options.timing).await?;
    let count = index_epochs::narinfo_count(db).await?;
    let depth = Depth::for_item_count(count);
    let delta_base = current
        .as_ref()
        .filter(|c| c.depth == i64::from(depth.get()))
        .map(|c| c.epoch);
    let mut row = EpochRow {
        epoch,
        depth: i64::from(depth.get()),
        item_count: 0,
        encoding_parameter: 0,
        journal_floor: floor,
        deltas_from: None,
        started_at: now_ms(),
        published_at: None,
        retired_at: None,
    };
    index_epochs::insert(db, &row).await?;

    let plan = shards::EpochPlan {
        epoch: epoch as u64,
        depth,
        delta_base: delta_base.map(|e| e as u64),
        concurrency: options.concurrency,
    };
    let bloom = BloomFilter::for_items(count, options.bloom_rate)?;
    let bar = progress_bar(options.progress, depth.shard_count() as u64);
    let (written, bloom) = shards::write(db, storage, &plan, bloom, &bar).await?;
    bar.finish_and_clear();
    let checksums = IndexFile::Checksums {
        epoch: epoch as u64,
    };
    files::put(
        storage,
        &checksums,
        written.checksums.to_json().into_bytes(),
    )
    .await?;

    row.item_count = i64::try_from(written.item_count).unwrap_or(i64::MAX);
    row.encoding_parameter = i64::from(written.encoding_parameter);
    row.deltas_from = delta_base.filter(|_| written.deltas_complete);
    index_epochs::finish(db, &row).await?;
    let previous = current.map_or(0, |c| c.epoch);
    let bloom_bytes = switch(db, storage, &row, previous, bloom, options).await?;

    let removed = cleanup::run(db, storage, now_ms() - millis(options.grace)).await?;
    Ok(BuildSummary {
        epoch: epoch as u64,
        previous: previous as u64,
        depth: depth.get(),
        item_count: written.item_count,
        shards: u64::from(depth.shard_count()),
        shard_bytes: written.shard_bytes,
        stored_bytes: written.stored_bytes,
        deltas: written.deltas,
        bloom_bytes,
        epochs_removed: removed.epochs,
        files_removed: removed.files,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// The writer's segment now: the snapshot read after this misses only changes published
/// in it or later (a database that never had a publisher starts at the wall clock's).
async fn journal_floor_now(db: &Db, timing: &JournalTiming) -> Result<i64, BuildError> {
    let mut tx = db
        .pool()
        .begin()
        .await
        .context("begin reading the journal")?;
    let state = journal::writer_state(&mut tx).await?;
    tx.commit().await.context("end reading the journal")?;
    Ok(if state.writer_segment > 0 {
        state.writer_segment
    } else {
        plan::wall_segment(OffsetDateTime::now_utc().unix_timestamp(), timing)
    })
}

/// Makes `epoch` current, under the journal lock so no publisher writes the manifest or
/// the Bloom filter meanwhile; returns the Bloom filter's size.
async fn switch(
    db: &Db,
    storage: &Storage,
    epoch: &EpochRow,
    previous: i64,
    mut bloom: BloomFilter,
    options: &BuildOptions,
) -> Result<u64, BuildError> {
    let Some(mut tx) = journal::begin_locked(db, true).await? else {
        return Err(BuildError::Busy);
    };
    let now = OffsetDateTime::now_utc();
    index_epochs::publish(&mut tx, epoch.epoch, previous, now_ms()).await?;
    for hash in journal::added_since(&mut tx, epoch.journal_floor).await? {
        if let Ok(h) = parse_hash(&hash) {
            bloom.insert(h);
        }
    }
    let bytes = bloom.to_bytes();
    let bloom_bytes = bytes.len() as u64;
    files::put(storage, &IndexFile::Bloom, bytes).await?;
    let before = journal::writer_state(&mut tx).await?;
    let state = plan::advance(before, now.unix_timestamp(), &options.timing);
    if state != before {
        journal::set_writer_state(&mut tx, &state).await?;
    }
    let config = PublisherConfig {
        public_url: options.public_url.clone(),
        timing: options.timing,
        interval: Duration::from_secs(1),
    };
    if !publish::write_manifest(&mut tx, storage, &state, &config, now).await? {
        return Err(BuildError::Manifest(
            "the journal does not reach back to the snapshot".into(),
        ));
    }
    tx.commit().await.context("commit the epoch switch")?;
    Ok(bloom_bytes)
}

fn progress_bar(enabled: bool, shards: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(shards), ProgressDrawTarget::stderr());
    // The template is a constant known to be valid; fall back to the default if not.
    let style = ProgressStyle::with_template("shards [{bar:30}] {pos}/{len} {per_sec} {eta}")
        .map(|s| s.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}
