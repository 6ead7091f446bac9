//! `larder index build` against a database and a store: every shard of the epoch (empty
//! ones too) holds exactly the narinfos, checksums and the Bloom filter agree, deltas
//! take the previous epoch to the new one, the manifest switches, old epochs go only
//! after the grace period, and builds exclude each other.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod index_support;

use std::collections::BTreeSet;
use std::time::Duration;

use index_support::{dir_store, hashes, insert_narinfos, postgres, push_hashes, read, sqlite};
use larder_worker::db::Db;
use larder_worker::index::bloom::BloomFilter;
use larder_worker::index::build::{self, BuildError, BuildOptions, BuildSummary};
use larder_worker::index::checksums::Checksums;
use larder_worker::index::compress::decompress;
use larder_worker::index::delta::{apply, parse_delta};
use larder_worker::index::hash::{format_hash, parse_hash, Depth, Prefix};
use larder_worker::index::manifest::Manifest;
use larder_worker::index::paths::IndexFile;
use larder_worker::index::plan::JournalTiming;
use larder_worker::index::reader::Shard;
use larder_worker::storage::Storage;
use ruint::aliases::U160;

fn options(grace: Duration) -> BuildOptions {
    BuildOptions {
        public_url: "http://cache.test".into(),
        timing: JournalTiming::default(),
        grace,
        bloom_rate: 0.01,
        concurrency: 8,
        progress: false,
    }
}

async fn shard(storage: &Storage, epoch: u64, prefix: Prefix) -> Option<Shard> {
    let bytes = read(storage, &IndexFile::Shard { epoch, prefix }.key()).await?;
    Some(Shard::parse(decompress(&bytes, 1 << 30).unwrap()).unwrap())
}

/// Every hash in the epoch, read back from all its shards (each must exist).
async fn contents(storage: &Storage, epoch: u64, depth: Depth) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for prefix in depth.prefixes() {
        let s = shard(storage, epoch, prefix)
            .await
            .unwrap_or_else(|| panic!("epoch {epoch} lacks shard {prefix}"));
        for suffix in s.iter() {
            out.insert(format_hash(depth.join(prefix, suffix.unwrap())));
        }
    }
    out
}

async fn manifest(storage: &Storage) -> Manifest {
    let text = read(storage, &IndexFile::Manifest.key()).await.unwrap();
    Manifest::from_json(&String::from_utf8(text).unwrap()).unwrap()
}

async fn build(db: &Db, storage: &Storage, grace: Duration) -> BuildSummary {
    build::run(db, storage, &options(grace)).await.unwrap()
}

#[tokio::test]
async fn builds_publish_shards_deltas_checksums_bloom_and_retire_old_epochs() {
    let (_d, db) = sqlite().await;
    let (_s, storage) = dir_store().await;
    let grace = Duration::from_secs(3600);

    // 1,500 narinfos: depth 1, 32 shards.
    let first = hashes(1, 1500);
    insert_narinfos(&db, &first).await;
    let s1 = build(&db, &storage, grace).await;
    assert_eq!((s1.epoch, s1.previous, s1.depth), (1, 0, 1));
    assert_eq!((s1.item_count, s1.shards, s1.deltas), (1500, 32, 0));
    let depth = Depth::new(1).unwrap();
    let want: BTreeSet<String> = first.iter().cloned().collect();
    assert_eq!(contents(&storage, 1, depth).await, want);

    let m = manifest(&storage).await;
    assert_eq!(
        (m.epoch_current, m.epoch_previous, m.item_count),
        (1, 0, 1500)
    );
    assert!(!m.deltas_enabled);
    assert_eq!(m.shards_base, "http://cache.test/nix-cache-index/shards/");

    let sums = Checksums::parse(
        &String::from_utf8(
            read(&storage, "nix-cache-index/deltas/checksums/1.json")
                .await
                .unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(sums.shards.len(), 32);
    for prefix in depth.prefixes() {
        let s = shard(&storage, 1, prefix).await.unwrap();
        let entry = &sums.shards[&prefix.name()];
        assert!(entry.matches(s.as_bytes()));
        assert_eq!(entry.item_count, s.len());
    }
    let bloom =
        BloomFilter::parse(&read(&storage, "nix-cache-index/bloom.bin").await.unwrap()).unwrap();
    assert!(first.iter().all(|h| bloom.contains(parse_hash(h).unwrap())));

    // Pushes and GC between builds: the journal carries them, the next epoch folds them in.
    push_hashes(&db, &hashes(2, 30), 1).await;
    let gone: Vec<String> = first[..20].to_vec();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DELETE FROM objects WHERE key IN ({})",
        gone.iter()
            .map(|h| format!("'{h}.narinfo'"))
            .collect::<Vec<_>>()
            .join(",")
    )))
    .execute(db.pool())
    .await
    .unwrap();
    let s2 = build(&db, &storage, grace).await;
    assert_eq!((s2.epoch, s2.previous), (2, 1));
    assert_eq!(s2.item_count, 1510);
    assert!(s2.deltas > 0 && s2.deltas <= 32, "{s2:?}");
    let mut want2 = want.clone();
    gone.iter().for_each(|h| {
        want2.remove(h);
    });
    want2.extend(hashes(2, 30));
    assert_eq!(contents(&storage, 2, depth).await, want2);
    let m = manifest(&storage).await;
    assert_eq!((m.epoch_current, m.epoch_previous), (2, 1));
    assert!(m.deltas_enabled);
    assert_eq!(m.deltas_oldest_base, 1);
    // Each delta takes its epoch-1 shard to the epoch-2 shard.
    for prefix in depth.prefixes() {
        let old: Vec<U160> = shard(&storage, 1, prefix)
            .await
            .unwrap()
            .iter()
            .map(|s| depth.join(prefix, s.unwrap()))
            .collect();
        let new: Vec<U160> = shard(&storage, 2, prefix)
            .await
            .unwrap()
            .iter()
            .map(|s| depth.join(prefix, s.unwrap()))
            .collect();
        let key = IndexFile::Delta {
            from: 1,
            to: 2,
            prefix,
        }
        .key();
        let delta = match read(&storage, &key).await {
            Some(z) => {
                parse_delta(&String::from_utf8(decompress(&z, 1 << 20).unwrap()).unwrap()).unwrap()
            }
            None => vec![],
        };
        assert_eq!(apply(old, &delta), new, "delta {prefix}");
    }

    // A third build retires epoch 1; with an hour of grace it stays.
    let s3 = build(&db, &storage, grace).await;
    assert_eq!((s3.epoch, s3.epochs_removed), (3, 0));
    let any = Prefix::parse("0").unwrap();
    assert!(shard(&storage, 1, any).await.is_some());
    // Past the grace period it goes, with its checksums and deltas; 2 and 3 stay.
    let s4 = build(&db, &storage, Duration::ZERO).await;
    assert_eq!((s4.epoch, s4.previous), (4, 3));
    assert_eq!(s4.epochs_removed, 2, "{s4:?}");
    assert!(shard(&storage, 1, any).await.is_none());
    assert!(shard(&storage, 2, any).await.is_none());
    assert!(read(&storage, "nix-cache-index/deltas/checksums/1.json")
        .await
        .is_none());
    assert!(shard(&storage, 3, any).await.is_some());
    assert_eq!(contents(&storage, 4, depth).await, want2);
}

#[tokio::test]
async fn an_empty_cache_gets_one_empty_root_shard_and_journal_additions_reach_the_bloom() {
    let (_d, db) = sqlite().await;
    let (_s, storage) = dir_store().await;
    let s = build(&db, &storage, Duration::from_secs(3600)).await;
    assert_eq!((s.epoch, s.depth, s.item_count, s.shards), (1, 0, 0, 1));
    let root = shard(&storage, 1, Prefix::parse("root").unwrap())
        .await
        .unwrap();
    assert!(root.is_empty());
    // Additions journaled after the floor reach the Bloom filter even when the snapshot
    // misses them (here: rows gone from `objects`, as if committed after it was read).
    let added = hashes(3, 5);
    push_hashes(&db, &added, 1).await;
    sqlx::query("DELETE FROM objects")
        .execute(db.pool())
        .await
        .unwrap();
    build(&db, &storage, Duration::from_secs(3600)).await;
    let bloom =
        BloomFilter::parse(&read(&storage, "nix-cache-index/bloom.bin").await.unwrap()).unwrap();
    assert!(added.iter().all(|h| bloom.contains(parse_hash(h).unwrap())));
}

#[tokio::test]
async fn builds_exclude_each_other_on_postgres() {
    let db = postgres("index-build-lock").await;
    let (_s, storage) = dir_store().await;
    insert_narinfos(&db, &hashes(4, 2000)).await;
    let opts = options(Duration::from_secs(3600));
    let (a, b) = tokio::join!(
        build::run(&db, &storage, &opts),
        build::run(&db, &storage, &opts),
    );
    let results = [a, b];
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let busy = results
        .iter()
        .filter(|r| matches!(r, Err(BuildError::Busy)))
        .count();
    // Either they overlapped (one refused) or ran one after the other.
    assert!(ok == 2 || (ok == 1 && busy == 1), "{results:?}");
    let s = build(&db, &storage, Duration::from_secs(3600)).await;
    assert_eq!(s.item_count, 2000);
    assert_eq!(
        contents(&storage, s.epoch, Depth::new(1).unwrap()).await,
        hashes(4, 2000).into_iter().collect()
    );
}

/// Pages of narinfo hashes, read the way a build reads them, in byte order.
async fn read_pages(db: &Db, limit: i64) -> Vec<String> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = larder_worker::db::index_epochs::narinfo_page(db, &after, limit)
            .await
            .unwrap();
        if page.count == 0 {
            return out;
        }
        assert_eq!(page.hashes.len() as u64, 32 * page.count);
        out.extend(
            page.hashes
                .as_bytes()
                .chunks(32)
                .map(|c| String::from_utf8(c.to_vec()).unwrap()),
        );
        after = page.last_key.unwrap();
    }
}

#[tokio::test]
async fn narinfo_pages_come_in_byte_order_on_both_engines() {
    let mut want = hashes(11, 50);
    // Digits sort before letters in byte order; some collations disagree about case and
    // punctuation, none of which a hash part has, but the order is checked anyway.
    want.sort();
    let (_d, lite) = sqlite().await;
    let pg = postgres("narinfo-pages").await;
    for db in [&lite, &pg] {
        insert_narinfos(db, &want).await;
        // Other kinds are not narinfos.
        sqlx::query(
            "INSERT INTO objects (key, kind, created_at, touched_at) \
             VALUES ('nar/0000000000000000000000000000000000000000000000000000.nar.zst', 1, 0, 0)",
        )
        .execute(db.pool())
        .await
        .unwrap();
        assert_eq!(read_pages(db, 7).await, want);
        assert_eq!(read_pages(db, 1000).await, want);
    }
}
