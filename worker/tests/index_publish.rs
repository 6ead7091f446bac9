//! The journal publisher: committed changes reach the segment file on the next tick,
//! the manifest moves to a new segment on time and the writer follows after the lag,
//! new paths reach the Bloom filter, and any number of publishers on one PostgreSQL
//! database publish every change exactly once, in order.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod index_support;

use std::time::Duration;

use index_support::{collect, dir_store, hashes, postgres, push_hashes, read, sqlite};
use larder_worker::db::index_epochs::{self, EpochRow};
use larder_worker::db::journal;
use larder_worker::db::Db;
use larder_worker::index::bloom::BloomFilter;
use larder_worker::index::files;
use larder_worker::index::hash::parse_hash;
use larder_worker::index::journal::{parse_segment, Op};
use larder_worker::index::manifest::Manifest;
use larder_worker::index::paths::IndexFile;
use larder_worker::index::plan::JournalTiming;
use larder_worker::index::publish::{tick, PublisherConfig};
use larder_worker::storage::Storage;
use time::OffsetDateTime;

fn config() -> PublisherConfig {
    PublisherConfig {
        public_url: "http://cache.test".into(),
        timing: JournalTiming::default(),
        interval: Duration::from_millis(20),
    }
}

fn at(seconds: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(seconds).unwrap()
}

async fn segment(storage: &Storage, id: u64) -> Vec<(Op, String)> {
    let key = IndexFile::Journal { segment: id }.key();
    let text = String::from_utf8(read(storage, &key).await.unwrap_or_default()).unwrap();
    parse_segment(&text)
        .unwrap()
        .into_iter()
        .map(|c| (c.op, larder_worker::index::hash::format_hash(c.hash)))
        .collect()
}

async fn publish_epoch(db: &Db, epoch: i64, floor: i64) {
    index_epochs::insert(
        db,
        &EpochRow {
            epoch,
            depth: 0,
            item_count: 0,
            encoding_parameter: 0,
            journal_floor: floor,
            deltas_from: None,
            started_at: 0,
            published_at: None,
            retired_at: None,
        },
    )
    .await
    .unwrap();
    let mut tx = journal::begin_locked(db, true).await.unwrap().unwrap();
    index_epochs::publish(&mut tx, epoch, epoch - 1, 0)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

#[tokio::test]
async fn committed_paths_reach_the_segment_the_manifest_and_the_bloom_filter() {
    let (_d, db) = sqlite().await;
    let (_s, storage) = dir_store().await;
    let cfg = config();
    let t0 = 1_705_147_210; // segment 1705147200
    let first = tick(&db, &storage, &cfg, at(t0)).await.unwrap().unwrap();
    assert_eq!(first.segment, 1_705_147_200);
    assert_eq!(first.published, 0);
    assert!(read(&storage, &IndexFile::Manifest.key()).await.is_none());

    // An index is published (as `larder index build` does) with an empty Bloom filter.
    publish_epoch(&db, 1, 1_705_147_200).await;
    let bloom = BloomFilter::for_items(100, 0.01).unwrap();
    files::put(&storage, &IndexFile::Bloom, bloom.to_bytes())
        .await
        .unwrap();

    let batch = hashes(1, 3);
    push_hashes(&db, &batch, 1).await;
    let report = tick(&db, &storage, &cfg, at(t0 + 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.published, 3);
    let want: Vec<(Op, String)> = batch.iter().map(|h| (Op::Add, h.clone())).collect();
    assert_eq!(segment(&storage, 1_705_147_200).await, want);
    let bloom =
        BloomFilter::parse(&read(&storage, "nix-cache-index/bloom.bin").await.unwrap()).unwrap();
    assert!(batch.iter().all(|h| bloom.contains(parse_hash(h).unwrap())));

    // The next segment starts: the manifest names it at once, the writer stays behind.
    let t1 = 1_705_147_500;
    let report = tick(&db, &storage, &cfg, at(t1)).await.unwrap().unwrap();
    assert!(report.manifest_written);
    let m = Manifest::from_json(
        &String::from_utf8(
            read(&storage, "nix-cache-index/manifest.json")
                .await
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(m.journal_current_segment, 1_705_147_500);
    assert_eq!(m.epoch_current, 1);
    assert_eq!(m.journal_retention_count, 12);
    assert_eq!(m.journal_base, "http://cache.test/nix-cache-index/journal/");
    let gone = collect(&db, 2, 3).await;
    assert_eq!(gone.len(), 3);
    tick(&db, &storage, &cfg, at(t1 + 64)).await.unwrap();
    let mut want_old = want.clone();
    want_old.extend(batch.iter().map(|h| (Op::Remove, h.clone())));
    assert_eq!(segment(&storage, 1_705_147_200).await, want_old);
    assert_eq!(segment(&storage, 1_705_147_500).await, vec![]);

    // After the lag, changes go to the new segment.
    push_hashes(&db, &batch[..1], 4).await;
    let report = tick(&db, &storage, &cfg, at(t1 + 65))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.segment, 1_705_147_500);
    assert_eq!(
        segment(&storage, 1_705_147_500).await,
        vec![(Op::Add, batch[0].clone())]
    );
    assert_eq!(segment(&storage, 1_705_147_200).await, want_old);
}

#[tokio::test]
async fn a_journal_that_no_longer_reaches_the_snapshot_withdraws_the_index() {
    let (_d, db) = sqlite().await;
    let (_s, storage) = dir_store().await;
    let cfg = config();
    tick(&db, &storage, &cfg, at(300)).await.unwrap();
    publish_epoch(&db, 1, 300).await;
    tick(&db, &storage, &cfg, at(600)).await.unwrap();
    assert!(read(&storage, "nix-cache-index/manifest.json")
        .await
        .is_some());
    // 4096 segments later, without a build in between.
    tick(&db, &storage, &cfg, at(300 + 4097 * 300))
        .await
        .unwrap();
    assert!(read(&storage, "nix-cache-index/manifest.json")
        .await
        .is_none());
}

#[tokio::test]
async fn many_publishers_on_postgres_publish_each_change_once_in_order() {
    let db = postgres("publishers").await;
    let (_s, storage) = dir_store().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (db, storage, stop) = (db.clone(), storage.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut ticks = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if tick(&db, &storage, &config(), at(1_000_000_000))
                    .await
                    .unwrap()
                    .is_some()
                {
                    ticks += 1;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ticks
        }));
    }
    let batch = hashes(7, 40);
    for chunk in batch.chunks(4) {
        push_hashes(&db, chunk, 1).await;
    }
    // One committed change is published within a few ticks.
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut ticks = 0;
    for w in workers {
        ticks += w.await.unwrap();
    }
    assert!(ticks > 4, "publishers barely ran: {ticks} ticks");
    let want: Vec<(Op, String)> = batch.iter().map(|h| (Op::Add, h.clone())).collect();
    assert_eq!(segment(&storage, 999_999_900).await, want);
}
