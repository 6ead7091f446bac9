//! The race niks3-style collectors lose, replayed step by step on real PostgreSQL +
//! Garage: an object is marked unreachable, then a push that references it starts and
//! trusts it, then the sweep deletes it, and the push commits a root whose closure is
//! now missing an object. A naive mark-and-sweep (mark computed once, sweep without a
//! re-check, pushes trusting any row) breaks; Larder's collector, given the same
//! interleaving, keeps every object.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod gc_support;

use std::time::Duration;

use gc_support::{Cache, Universe};
use larder_worker::db::now_ms;
use larder_worker::gc::lock::RunLock;
use larder_worker::gc::GcOptions;
use sqlx::Row;

const RETENTION: Duration = Duration::from_millis(1500);

/// Paths: 0 = shared dependency, 1 = old root (expires), 2 = new root (pushed during GC).
fn universe() -> Universe {
    Universe::with_deps(7, &[&[], &[0], &[0]])
}

/// Pushes and commits the closure of `root`.
async fn push(cache: &Cache, universe: &Universe, root: usize) -> Vec<String> {
    let started = cache.begin(universe, root).await;
    let uploaded: Vec<String> = started.to_upload.iter().map(|(k, _)| k.clone()).collect();
    for (key, url) in &started.to_upload {
        cache.upload(key, url).await;
    }
    assert_eq!(cache.complete(&started.id).await, 204);
    uploaded
}

/// Keys of `root`'s closure the bucket lacks while `root` is a committed root.
async fn missing(cache: &Cache, universe: &Universe, root: usize) -> Vec<String> {
    let state = cache.snapshot().await;
    assert!(
        state.roots.contains(&universe.narinfo(root)),
        "root not committed"
    );
    universe
        .closure_keys(root)
        .into_iter()
        .filter(|k| !state.bucket.contains(k))
        .collect()
}

/// Mark as a naive collector does: one query, kept in memory, nothing written.
async fn naive_mark(cache: &Cache, cutoff: i64) -> Vec<String> {
    let pool = cache.db.pool();
    sqlx::query("DELETE FROM closures WHERE updated_at < $1")
        .bind(cutoff)
        .execute(pool)
        .await
        .unwrap();
    sqlx::query(
        "WITH RECURSIVE live(key) AS (SELECT key FROM closures \
         UNION SELECT key FROM pending_objects \
         UNION SELECT r.to_key FROM refs r JOIN live l ON r.from_key = l.key) \
         SELECT key FROM objects WHERE key NOT IN (SELECT key FROM live)",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get::<String, _>(0))
    .collect()
}

/// Sweep as a naive collector does: delete what the mark found, without looking again.
async fn naive_sweep(cache: &Cache, doomed: &[String]) {
    let failed = cache.storage.delete_many(doomed).await.unwrap();
    assert!(failed.is_empty());
    for key in doomed {
        for sql in [
            "DELETE FROM refs WHERE from_key = $1",
            "DELETE FROM objects WHERE key = $1",
        ] {
            sqlx::query(sql)
                .bind(key)
                .execute(cache.db.pool())
                .await
                .unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naive_mark_and_sweep_loses_an_object_a_push_relies_on() {
    let cache = Cache::open("gc-naive").await;
    let universe = universe();
    push(&cache, &universe, 1).await;
    tokio::time::sleep(RETENTION).await;

    let doomed = naive_mark(&cache, now_ms() - RETENTION.as_millis() as i64).await;
    let shared = universe.narinfo(0);
    assert!(
        doomed.contains(&shared),
        "the old closure is garbage: {doomed:?}"
    );
    // The push of root 2 starts between mark and sweep and finds `shared` present.
    let started = cache.begin(&universe, 2).await;
    assert!(started.present.contains(&shared));
    for (key, url) in &started.to_upload {
        cache.upload(key, url).await;
    }
    naive_sweep(&cache, &doomed).await;
    assert_eq!(cache.complete(&started.id).await, 204);

    let lost = missing(&cache, &universe, 2).await;
    assert!(
        lost.contains(&shared),
        "expected the naive collector to lose the shared dependency; missing: {lost:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn larder_keeps_the_object_in_the_same_interleaving() {
    let cache = Cache::open("gc-not-naive").await;
    let universe = universe();
    push(&cache, &universe, 1).await;
    tokio::time::sleep(RETENTION).await;

    let options = GcOptions {
        older_than: RETENTION,
        failed_uploads_older_than: Duration::from_secs(3600),
        grace: Duration::ZERO,
        dry_run: false,
    };
    let lock = RunLock::acquire(&cache.db).await.unwrap().unwrap();
    let mut summary = larder_worker::gc::mark_phase(&cache.db, &cache.storage, &options, now_ms())
        .await
        .unwrap();
    assert_eq!(summary.roots_expired, 1);
    assert!(summary.objects_marked >= 6, "{summary:?}");
    // The same push, at the same moment: Larder does not trust the marked dependency,
    // so the client uploads it again, and its pending session shields it from the sweep.
    let started = cache.begin(&universe, 2).await;
    let shared = universe.narinfo(0);
    assert!(
        !started.present.contains(&shared),
        "a marked object was trusted"
    );
    for (key, url) in &started.to_upload {
        cache.upload(key, url).await;
    }
    larder_worker::gc::sweep(&cache.db, &cache.storage, now_ms(), &mut summary)
        .await
        .unwrap();
    lock.release().await.unwrap();
    assert_eq!(cache.complete(&started.id).await, 204);

    assert_eq!(missing(&cache, &universe, 2).await, Vec::<String>::new());
    // Only what no root needs any more went: the old root's own objects.
    let state = cache.snapshot().await;
    for key in universe.closure_keys(1) {
        let needed = universe.closure_keys(2).contains(&key);
        assert_eq!(state.bucket.contains(&key), needed, "{key}");
    }
    assert!(
        state.objects.values().all(|marked| !marked),
        "marks left on live objects"
    );
}
