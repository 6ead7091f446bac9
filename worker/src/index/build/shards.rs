//! Writing an epoch's shards: narinfo keys stream from the database in order, are cut
//! into groups, and each group becomes its shard file (and its delta from the previous
//! epoch) while the next groups are read. Memory: the Bloom filter, the checksums and
//! the shards in flight.

use futures::channel::mpsc;
use futures::{SinkExt, StreamExt, TryStreamExt};
use indicatif::ProgressBar;
use ruint::aliases::U160;

use super::group::{Group, Grouper};
use super::BuildError;
use crate::db::index_epochs::{self, NarinfoPage};
use crate::db::{Db, DbError};
use crate::index::bloom::BloomFilter;
use crate::index::checksums::{Checksums, ShardChecksum};
use crate::index::compress::{compress, decompress, DEFAULT_MAX_DECOMPRESSED};
use crate::index::delta::{diff, render_delta};
use crate::index::files::{self, MAX_FILE};
use crate::index::hash::{parse_hash, Depth, Prefix};
use crate::index::journal::Change;
use crate::index::paths::IndexFile;
use crate::index::reader::Shard;
use crate::index::shard::ShardWriter;
use crate::storage::Storage;

/// Groups read ahead of the writers.
const QUEUE: usize = 64;

/// What the shard writers need.
#[derive(Debug, Clone)]
pub struct EpochPlan {
    /// The epoch being written.
    pub epoch: u64,
    /// Its depth.
    pub depth: Depth,
    /// The epoch to write deltas from (same depth), if any.
    pub delta_base: Option<u64>,
    /// Shards written at once.
    pub concurrency: usize,
}

/// What writing the shards produced.
#[derive(Debug)]
pub struct Written {
    /// Items across all shards.
    pub item_count: u64,
    /// k of the largest shard.
    pub encoding_parameter: u8,
    /// Every shard's checksum.
    pub checksums: Checksums,
    /// Decompressed bytes of all shards.
    pub shard_bytes: u64,
    /// Stored (compressed) bytes of all shards.
    pub stored_bytes: u64,
    /// Delta files written.
    pub deltas: u64,
    /// Whether every shard has its delta (or an empty one, omitted).
    pub deltas_complete: bool,
}

/// One written shard.
struct Done {
    group_len: u64,
    k: u8,
    prefix: Prefix,
    checksum: ShardChecksum,
    stored: u64,
    delta: Option<bool>,
}

/// Narinfos read per query.
const PAGE: i64 = 50_000;

/// Streams every narinfo from the database into the shards of `plan.epoch`, setting
/// each one's bits in `bloom` on a thread of its own (its random accesses cost as much as
/// the rest of reading); returns what was written and the filled filter.
pub async fn write(
    db: &Db,
    storage: &Storage,
    plan: &EpochPlan,
    bloom: BloomFilter,
    bar: &ProgressBar,
) -> Result<(Written, BloomFilter), BuildError> {
    let (mut tx, rx) = mpsc::channel::<Group>(QUEUE);
    let (bloom_tx, mut bloom_rx) = tokio::sync::mpsc::channel::<Vec<U160>>(4);
    let bloom_task = tokio::task::spawn_blocking(move || {
        let mut bloom = bloom;
        while let Some(batch) = bloom_rx.blocking_recv() {
            batch.into_iter().for_each(|h| bloom.insert(h));
        }
        bloom
    });
    // Pages come one query ahead, from a task of their own: the database reads the next
    // page while this one is parsed and grouped.
    let (page_tx, mut page_rx) = tokio::sync::mpsc::channel::<NarinfoPage>(2);
    let pages = tokio::spawn(read_pages(db.clone(), page_tx));
    let read = async move {
        let started = std::time::Instant::now();
        let mut grouper = Grouper::new(plan.depth);
        while let Some(page) = page_rx.recv().await {
            let bad = || BuildError::BadKey(page.hashes.chars().take(80).collect());
            if page.hashes.len() as u64 != 32 * page.count || !page.hashes.is_ascii() {
                return Err(bad());
            }
            let mut batch = Vec::with_capacity(page.count as usize);
            for chunk in page.hashes.as_bytes().chunks(32) {
                let hash = std::str::from_utf8(chunk)
                    .ok()
                    .and_then(|h| parse_hash(h).ok())
                    .ok_or_else(bad)?;
                batch.push(hash);
                for group in grouper.push(hash)? {
                    // The writers only stop early on an error, which `try_join` reports.
                    if tx.send(group).await.is_err() {
                        return Ok(());
                    }
                }
            }
            if bloom_tx.send(batch).await.is_err() {
                return Err(BuildError::Task("the Bloom filter thread stopped".into()));
            }
        }
        // The channel also closes when reading failed: only a clean end is the end.
        pages
            .await
            .map_err(|e| BuildError::Task(format!("reading narinfos: {e}")))??;
        for group in grouper.finish() {
            if tx.send(group).await.is_err() {
                return Ok(());
            }
        }
        tx.close_channel();
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            "read every narinfo"
        );
        Ok::<(), BuildError>(())
    };
    let mut written = Written {
        item_count: 0,
        encoding_parameter: 0,
        checksums: Checksums::new(plan.epoch),
        shard_bytes: 0,
        stored_bytes: 0,
        deltas: 0,
        deltas_complete: plan.delta_base.is_some(),
    };
    let mut largest = 0u64;
    let write = rx
        .map(|group| write_one(storage, plan, group))
        .buffer_unordered(plan.concurrency.max(1))
        .try_for_each(|done| {
            written.item_count += done.group_len;
            if done.group_len >= largest {
                largest = done.group_len;
                written.encoding_parameter = done.k;
            }
            written.shard_bytes += done.checksum.size_bytes;
            written.stored_bytes += done.stored;
            match done.delta {
                Some(true) => written.deltas += 1,
                Some(false) => {}
                None => written.deltas_complete = false,
            }
            written.checksums.insert(done.prefix, done.checksum);
            bar.inc(1);
            futures::future::ready(Ok(()))
        });
    futures::try_join!(read, write)?;
    let bloom = bloom_task
        .await
        .map_err(|e| BuildError::Task(format!("the Bloom filter thread failed: {e}")))?;
    Ok((written, bloom))
}

/// Sends every page of narinfo hash parts, in order, until the last one or until the
/// receiver is gone.
async fn read_pages(db: Db, pages: tokio::sync::mpsc::Sender<NarinfoPage>) -> Result<(), DbError> {
    let mut after = String::new();
    loop {
        let page = index_epochs::narinfo_page(&db, &after, PAGE).await?;
        if page.count == 0 {
            return Ok(());
        }
        after = page.last_key.clone().unwrap_or_default();
        if pages.send(page).await.is_err() {
            return Ok(());
        }
    }
}

/// Encodes, compresses and stores one shard, then its delta from the base epoch.
async fn write_one(storage: &Storage, plan: &EpochPlan, group: Group) -> Result<Done, BuildError> {
    let prefix = group.prefix;
    let n = group.suffixes.len() as u64;
    let shard_error = |source| BuildError::Shard {
        prefix: prefix.name(),
        source,
    };
    let mut writer = ShardWriter::new(plan.depth, n);
    for &s in &group.suffixes {
        writer.push(s).map_err(shard_error)?;
    }
    let k = writer.k();
    let raw = writer.finish().map_err(shard_error)?;
    let checksum = ShardChecksum::of(&raw, n);
    let stored = compress(&raw).map_err(|source| BuildError::Compress {
        what: prefix.name(),
        source,
    })?;
    drop(raw);
    let stored_len = stored.len() as u64;
    let file = IndexFile::Shard {
        epoch: plan.epoch,
        prefix,
    };
    files::put(storage, &file, stored).await?;
    let delta = match plan.delta_base {
        Some(base) => write_delta(storage, plan, base, &group).await?,
        None => Some(false),
    };
    Ok(Done {
        group_len: n,
        k,
        prefix,
        checksum,
        stored: stored_len,
        delta,
    })
}

/// Writes the delta of one shard from `base`: `Some(true)` when written, `Some(false)`
/// when empty (omitted), `None` when the base shard is missing or unreadable.
async fn write_delta(
    storage: &Storage,
    plan: &EpochPlan,
    base: u64,
    group: &Group,
) -> Result<Option<bool>, BuildError> {
    let prefix = group.prefix;
    let old_file = IndexFile::Shard {
        epoch: base,
        prefix,
    };
    let Some(old) = files::get(storage, &old_file, MAX_FILE).await? else {
        return Ok(None);
    };
    let Ok(old) = decompress(&old, DEFAULT_MAX_DECOMPRESSED) else {
        return Ok(None);
    };
    let Ok(old) = Shard::parse(old) else {
        return Ok(None);
    };
    let Ok(old) = old.iter().collect::<Result<Vec<U160>, _>>() else {
        return Ok(None);
    };
    let changes: Vec<Change> = diff(old, group.suffixes.iter().copied())
        .into_iter()
        .map(|c| Change {
            op: c.op,
            hash: plan.depth.join(prefix, c.hash),
        })
        .collect();
    if changes.is_empty() {
        return Ok(Some(false));
    }
    let text = render_delta(&changes).map_err(BuildError::Delta)?;
    let bytes = compress(text.as_bytes()).map_err(|source| BuildError::Compress {
        what: format!("delta {prefix}"),
        source,
    })?;
    let file = IndexFile::Delta {
        from: base,
        to: plan.epoch,
        prefix,
    };
    files::put(storage, &file, bytes).await?;
    Ok(Some(true))
}
