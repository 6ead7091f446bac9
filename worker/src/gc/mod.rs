//! Garbage collection runs: stale sessions, root expiry, mark, sweep. See docs/gc.md.

pub mod fsck;
pub mod lock;

use std::collections::HashSet;
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::{StreamExt, TryStreamExt};

use serde::Serialize;

use crate::db::{self, now_ms, Db, DbError};
use crate::storage::{DeleteFailure, Storage, StorageError};

/// Objects per sweep batch: rows locked, deleted from the bucket and from the database
/// in one transaction. On PostgreSQL a batch's database work is about 120 ms at a
/// million store paths (docs/gc.md, rule 4), its bucket work three rounds of requests.
const SWEEP_BATCH: i64 = 10_000;
/// Keys per bucket request (S3 `DeleteObjects` takes at most 1000).
const BUCKET_BATCH: usize = 1000;
/// Bucket requests in flight at once during a sweep batch.
const BUCKET_REQUESTS: usize = 4;
/// Multipart uploads of abandoned sessions aborted at once.
const ABORT_CONCURRENCY: usize = 8;

/// What one run does.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// Roots last pushed longer ago than this expire (pins never do).
    pub older_than: Duration,
    /// Upload sessions started longer ago than this are abandoned and cleaned.
    pub failed_uploads_older_than: Duration,
    /// Objects stay marked this long before the sweep deletes them.
    pub grace: Duration,
    /// Count what would happen; change nothing.
    pub dry_run: bool,
}

/// The outcome of a run, printed as one JSON line.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct GcSummary {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// Abandoned upload sessions removed.
    pub stale_sessions: u64,
    /// Roots expired (or that would be).
    pub roots_expired: u64,
    /// Objects found unreachable in this run.
    pub objects_marked: u64,
    /// Their size in bytes.
    pub bytes_marked: i64,
    /// Objects deleted from the bucket and the database.
    pub objects_deleted: u64,
    /// Bytes those objects held.
    pub bytes_deleted: i64,
    /// Objects the bucket refused to delete (kept; retried next run).
    pub failures: u64,
    /// Multipart uploads of abandoned sessions the bucket refused to abort (left to its
    /// lifecycle rule).
    pub uploads_not_aborted: u64,
    /// What killed uploads left and no row names, removed: temporary files and
    /// multipart folders (local directory), NAR multipart uploads aborted (S3).
    pub upload_leftovers_removed: u64,
    /// Wall time of the run in milliseconds.
    pub duration_ms: u64,
    /// Of which the first half: stale sessions, root expiry and the mark.
    pub mark_ms: u64,
    /// Of which the sweep, bucket deletes included.
    pub sweep_ms: u64,
    /// The sweep's bucket deletes, summed over its lanes (which run at once, so this
    /// can exceed `sweep_ms`).
    pub bucket_ms: u64,
}

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("another garbage collection is running (the run lock is held)")]
    Busy,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 4)
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Runs one collection, exclusive across every worker sharing the database.
pub async fn run(db: &Db, storage: &Storage, options: &GcOptions) -> Result<GcSummary, GcError> {
    let lock = lock::RunLock::acquire(db).await?.ok_or(GcError::Busy)?;
    let result = run_locked(db, storage, options).await;
    lock.release().await?;
    // Statistics are best effort: a run that did its work is not failed by them.
    let recorded = match &result {
        Ok(s) if !s.dry_run => {
            let duration = i64::try_from(s.duration_ms).unwrap_or(i64::MAX);
            db::gc_stats::record_success(
                db,
                s.objects_deleted as i64,
                s.bytes_deleted,
                duration,
                now_ms(),
            )
            .await
        }
        Ok(_) => Ok(()),
        Err(_) => db::gc_stats::record_failure(db).await,
    };
    if let Err(e) = recorded {
        tracing::warn!("cannot record GC statistics: {e}");
    }
    result
}

async fn run_locked(db: &Db, storage: &Storage, options: &GcOptions) -> Result<GcSummary, GcError> {
    let started = Instant::now();
    let now = now_ms();
    let mut summary = mark_phase(db, storage, options, now).await?;
    summary.mark_ms = elapsed_ms(started);
    if !options.dry_run {
        let sweep_started = Instant::now();
        sweep(db, storage, now - ms(options.grace), &mut summary).await?;
        summary.sweep_ms = elapsed_ms(sweep_started);
    }
    summary.duration_ms = elapsed_ms(started);
    Ok(summary)
}

/// The first half of a run, under the caller's [`lock::RunLock`]: abandon stale
/// sessions, expire old roots, open a new epoch and mark what is unreachable. Public
/// (with [`sweep`]) so tests can interleave pushes between the two halves.
pub async fn mark_phase(
    db: &Db,
    storage: &Storage,
    options: &GcOptions,
    now: i64,
) -> Result<GcSummary, GcError> {
    let mut summary = GcSummary {
        dry_run: options.dry_run,
        ..GcSummary::default()
    };
    if !options.dry_run {
        let cutoff = now - ms(options.failed_uploads_older_than);
        let (sessions, uploads) = db::pending::delete_started_before(db, cutoff, now).await?;
        summary.stale_sessions = sessions;
        // Best effort: an upload left open only costs storage until the bucket's
        // lifecycle rule removes it, so it does not stop the collection. (One already
        // completed or aborted, e.g. by a concurrent cleanup, is no failure: aborting an
        // unknown upload succeeds.)
        summary.uploads_not_aborted =
            storage.abort_all(&uploads, ABORT_CONCURRENCY).await.len() as u64;
        // After the sessions: a leftover of one still open is younger than the cutoff.
        let cutoff = UNIX_EPOCH + Duration::from_millis(u64::try_from(cutoff).unwrap_or(0));
        summary.upload_leftovers_removed = storage.remove_stale_uploads(cutoff).await?;
    }
    let root_cutoff = now - ms(options.older_than);
    summary.roots_expired = db::gc::expire_roots(db, root_cutoff, options.dry_run).await?;
    let epoch = if options.dry_run {
        i64::MAX
    } else {
        db::gc::next_epoch(db).await?
    };
    let (marked, bytes) = db::gc::mark(db, epoch, root_cutoff, now, options.dry_run).await?;
    summary.objects_marked = marked;
    summary.bytes_marked = bytes;
    Ok(summary)
}

/// The second half of a run: deletes marked objects past grace (`marked_at <= cutoff`),
/// batch by batch, bytes before rows, re-checking each under its row lock. On
/// PostgreSQL [`db::gc::LANES`] connections take batches at once.
pub async fn sweep(
    db: &Db,
    storage: &Storage,
    cutoff: i64,
    summary: &mut GcSummary,
) -> Result<(), GcError> {
    sweep_in_batches(db, storage, cutoff, SWEEP_BATCH, summary).await
}

/// [`sweep`] with batches of at most `batch` objects (tests use small ones, so that
/// lanes interleave).
pub async fn sweep_in_batches(
    db: &Db,
    storage: &Storage,
    cutoff: i64,
    batch: i64,
    summary: &mut GcSummary,
) -> Result<(), GcError> {
    let (first, others) = db::gc::start_sweep_in_lanes(db, cutoff, db::gc::LANES).await?;
    let ((first, tally), others) = futures::try_join!(
        sweep_lane(first, storage, batch),
        futures::future::try_join_all(others.into_iter().map(|l| sweep_lane(l, storage, batch))),
    )?;
    tally.add_to(summary);
    for (_, tally) in &others {
        tally.add_to(summary);
    }
    first.finish().await?;
    Ok(())
}

/// What one sweep lane deleted and how long it waited for the bucket.
#[derive(Debug, Default)]
struct Tally {
    deleted: u64,
    bytes: i64,
    failures: u64,
    bucket_ms: u64,
}

impl Tally {
    fn add_to(&self, summary: &mut GcSummary) {
        summary.objects_deleted += self.deleted;
        summary.bytes_deleted += self.bytes;
        summary.failures += self.failures;
        summary.bucket_ms += self.bucket_ms;
    }
}

/// Takes batches on one lane until none are left: locks, bucket deletes, row deletes.
async fn sweep_lane(
    mut lane: db::gc::Sweeper,
    storage: &Storage,
    limit: i64,
) -> Result<(db::gc::Sweeper, Tally), GcError> {
    let mut tally = Tally::default();
    while let Some(batch) = lane.next_batch(limit).await? {
        let doomed: Vec<String> = batch.doomed.iter().map(|d| d.key.clone()).collect();
        let bucket_started = Instant::now();
        // The bucket takes at most 1000 keys a request; a few requests at a time hide
        // its latency while the rows stay locked.
        let requests: Vec<_> = doomed
            .chunks(BUCKET_BATCH)
            .map(|keys| storage.delete_many(keys))
            .collect();
        let failed: Vec<Vec<DeleteFailure>> = futures::stream::iter(requests)
            .buffer_unordered(BUCKET_REQUESTS)
            .try_collect()
            .await?;
        tally.bucket_ms += elapsed_ms(bucket_started);
        let failed: HashSet<&str> = failed.iter().flatten().map(|f| f.key.as_str()).collect();
        let deleted: Vec<String> = doomed
            .iter()
            .filter(|k| !failed.contains(k.as_str()))
            .cloned()
            .collect();
        tally.failures += failed.len() as u64;
        tally.deleted += deleted.len() as u64;
        tally.bytes += batch
            .doomed
            .iter()
            .filter(|d| !failed.contains(d.key.as_str()))
            .map(|d| d.size)
            .sum::<i64>();
        batch.commit(&deleted).await?;
    }
    tracing::debug!(
        deleted = tally.deleted,
        bucket_ms = tally.bucket_ms,
        "gc sweep: lane done"
    );
    Ok((lane, tally))
}
