//! Randomized stress test of garbage collection against concurrent pushes, on real
//! PostgreSQL + Garage and a real `larder serve`.
//!
//! One loop interleaves upload sessions (new and overlapping closures, some abandoned
//! midway), uploads, commits and inline GC runs, while another task runs GC back to back
//! with grace 0, short root retention and short failed-upload grace. After every step an
//! independent checker (its own SQL and S3 clients) asserts the invariants of docs/gc.md:
//! every object a live root reaches is in the bucket and in the database, unmarked, and
//! nothing an unexpired session relies on is gone from the bucket.
//!
//! `fixed_seed` runs in CI; `seed_from_env` takes `LARDER_GC_STRESS_SEED` (else a fresh
//! seed, printed) and `LARDER_GC_STRESS_STEPS`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod gc_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use gc_support::{Cache, Rng, Universe};
use larder_worker::db::now_ms;
use larder_worker::gc::lock::RunLock;
use larder_worker::gc::{GcError, GcOptions, GcSummary};

/// Roots not pushed for this long expire.
const ROOT_TTL: Duration = Duration::from_millis(2000);
/// Sessions older than this are abandoned and cleaned by GC.
const SESSION_TTL: Duration = Duration::from_millis(6000);
/// Clock skew allowed between the test's view of a session's age and the worker's.
const SLACK: Duration = Duration::from_millis(500);
/// Upload sessions open at once.
const MAX_SESSIONS: usize = 8;

fn options() -> GcOptions {
    GcOptions {
        older_than: ROOT_TTL,
        failed_uploads_older_than: SESSION_TTL,
        grace: Duration::ZERO,
        dry_run: false,
    }
}

/// An upload session as the pusher sees it.
struct Session {
    id: String,
    root: usize,
    started: Instant,
    /// Objects the worker said were present: they must survive while the session lives.
    present: Vec<String>,
    /// Objects still to upload, with their presigned URLs.
    to_upload: Vec<(String, String)>,
    /// Objects uploaded so far.
    uploaded: Vec<String>,
    /// Uploads after which an abandoned session stops for good.
    abandon_after: Option<usize>,
}

impl Session {
    fn expired(&self) -> bool {
        self.started.elapsed() + SLACK >= SESSION_TTL
    }
    fn stalled(&self) -> bool {
        self.abandon_after
            .is_some_and(|n| self.uploaded.len() >= n || self.to_upload.is_empty())
    }
}

#[derive(Default, Debug)]
struct Tally {
    starts: u64,
    uploads: u64,
    commits: u64,
    expired_commits: u64,
    abandoned: u64,
    inline_gc: u64,
    inline_busy: u64,
    marks: u64,
    sweeps: u64,
    waits: u64,
}

async fn stress(seed: u64, steps: usize) {
    let test = format!("gc-stress-{seed}");
    let cache = Cache::open(&test).await;
    let universe = Universe::new(seed, 40);
    let mut rng = Rng::new(seed);
    println!("gc stress: seed {seed}, {steps} steps");

    // GC back to back in the background, as a CronJob on another node would.
    let stop = Arc::new(AtomicBool::new(false));
    let background = {
        let (db, storage, stop) = (cache.db.clone(), cache.storage.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut runs, mut deleted) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                match larder_worker::gc::run(&db, &storage, &options()).await {
                    Ok(summary) => {
                        runs += 1;
                        deleted += summary.objects_deleted;
                    }
                    Err(GcError::Busy) => {}
                    Err(e) => panic!("background GC failed: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (runs, deleted)
        })
    };

    let mut sessions: Vec<Session> = Vec::new();
    let mut tally = Tally::default();
    // A run split in two at the riskiest point: pushes happen between its mark and sweep.
    let mut held: Option<(RunLock, GcSummary)> = None;
    for step in 0..steps {
        let roll = rng.below(100);
        let action;
        if roll < 22 && sessions.len() < MAX_SESSIONS {
            action = "start";
            let root = rng.below(universe.len() as u64) as usize;
            let started = cache.begin(&universe, root).await;
            let abandon_after = (rng.below(100) < 20)
                .then(|| rng.below(started.to_upload.len() as u64 + 1) as usize);
            tally.starts += 1;
            tally.abandoned += u64::from(abandon_after.is_some());
            sessions.push(Session {
                id: started.id,
                root,
                started: started.at,
                present: started.present,
                to_upload: started.to_upload,
                uploaded: Vec::new(),
                abandon_after,
            });
        } else if roll < 57 {
            action = "upload";
            let ready: Vec<usize> = (0..sessions.len())
                // Presigned URLs outlive nothing: in production they expire (5 h) before
                // GC abandons a session (6 h), so no upload lands after the cleanup.
                .filter(|&i| {
                    let s = &sessions[i];
                    !s.to_upload.is_empty() && !s.stalled() && !s.expired()
                })
                .collect();
            if let Some(&i) = rng.pick(&ready) {
                let s = &mut sessions[i];
                let (key, url) = s.to_upload.remove(0);
                cache.upload(&key, &url).await;
                s.uploaded.push(key);
                tally.uploads += 1;
            }
        } else if roll < 75 {
            action = "complete";
            let done: Vec<usize> = (0..sessions.len())
                .filter(|&i| {
                    sessions[i].to_upload.is_empty() && sessions[i].abandon_after.is_none()
                })
                .collect();
            if let Some(&i) = rng.pick(&done) {
                let s = sessions.remove(i);
                let status = cache.complete(&s.id).await;
                match status {
                    204 => tally.commits += 1,
                    // GC cleaned the session as abandoned: only once it is old enough.
                    404 if s.started.elapsed() + SLACK >= SESSION_TTL => tally.expired_commits += 1,
                    other => panic!(
                        "step {step}: completing session {} of root {} answered {other}\n{}",
                        s.id,
                        s.root,
                        cache.worker.log()
                    ),
                }
            }
        } else if roll < 81 && held.is_none() {
            action = "mark";
            // The background collector holds the lock most of the time: wait for a gap.
            let mut lock = None;
            for _ in 0..200 {
                lock = RunLock::acquire(&cache.db).await.unwrap();
                if lock.is_some() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if let Some(lock) = lock {
                let summary =
                    larder_worker::gc::mark_phase(&cache.db, &cache.storage, &options(), now_ms())
                        .await
                        .unwrap_or_else(|e| panic!("step {step}: mark failed: {e}"));
                tally.marks += 1;
                held = Some((lock, summary));
            }
        } else if roll < 87 && held.is_some() {
            action = "sweep";
            if let Some((lock, mut summary)) = held.take() {
                // Small batches, so that the sweep's lanes interleave with each other
                // and with the pushes.
                let batch = 1 + rng.below(8) as i64;
                larder_worker::gc::sweep_in_batches(
                    &cache.db,
                    &cache.storage,
                    now_ms(),
                    batch,
                    &mut summary,
                )
                .await
                .unwrap_or_else(|e| panic!("step {step}: sweep failed: {e}"));
                lock.release().await.unwrap();
                tally.sweeps += 1;
            }
        } else if roll < 90 {
            action = "gc";
            match larder_worker::gc::run(&cache.db, &cache.storage, &options()).await {
                Ok(_) => tally.inline_gc += 1,
                Err(GcError::Busy) => tally.inline_busy += 1,
                Err(e) => panic!("step {step}: inline GC failed: {e}"),
            }
        } else {
            action = "wait";
            tally.waits += 1;
            tokio::time::sleep(Duration::from_millis(20 + rng.below(120))).await;
        }
        // Sessions the worker has surely forgotten, and sessions too old to upload to,
        // no longer constrain anything (nor hold one of the MAX_SESSIONS slots).
        sessions.retain(|s| {
            let stuck = s.stalled() || (s.expired() && !s.to_upload.is_empty());
            !(stuck && s.started.elapsed() > SESSION_TTL + SLACK)
        });
        check(&cache, &universe, &sessions, step, action).await;
    }

    if let Some((lock, _)) = held.take() {
        lock.release().await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    let (runs, deleted) = background.await.unwrap();
    println!("gc stress: {tally:?}; background GC runs {runs}, objects deleted {deleted}");
    assert!(
        tally.commits >= (steps as u64 / 50).max(10),
        "too few commits to mean anything: {tally:?}"
    );
    assert!(runs > 10, "too few background GC runs: {runs}");
    assert!(tally.sweeps > 10, "too few split runs: {tally:?}");
    assert!(
        deleted > 0,
        "GC never deleted anything: the test exercised nothing"
    );

    // Once every root and session has expired, GC leaves nothing behind: failed uploads
    // included (abandoned sessions' objects are swept too).
    tokio::time::sleep(SESSION_TTL.max(ROOT_TTL) + SLACK).await;
    for _ in 0..2 {
        larder_worker::gc::run(&cache.db, &cache.storage, &options())
            .await
            .unwrap();
    }
    let state = cache.snapshot().await;
    assert!(state.roots.is_empty(), "roots left: {:?}", state.roots);
    assert!(
        state.objects.is_empty(),
        "rows left: {:?}",
        state.objects.keys()
    );
    // The index journal is the worker's own file, not an object of any closure.
    let left: Vec<&String> = state
        .bucket
        .iter()
        .filter(|k| !k.starts_with("nix-cache-index/"))
        .collect();
    assert!(left.is_empty(), "objects left in the bucket: {left:?}");
}

/// The invariants, checked from outside: rows and bucket listed before the roots are
/// read, so a root seen live was live while its objects were listed.
async fn check(
    cache: &Cache,
    universe: &Universe,
    sessions: &[Session],
    step: usize,
    action: &str,
) {
    let state = cache.snapshot().await;
    for root in &state.roots {
        let path = universe.path_of_narinfo(root);
        for key in universe.closure_keys(path) {
            let row = state.objects.get(&key);
            assert!(
                row.is_some() && state.bucket.contains(&key),
                "step {step} ({action}): live root {root} reaches {key}, which is missing \
                 (row: {row:?}, in bucket: {})",
                state.bucket.contains(&key)
            );
            assert_eq!(
                row,
                Some(&false),
                "step {step} ({action}): live root {root} reaches {key}, which is marked"
            );
        }
    }
    for s in sessions.iter().filter(|s| !s.expired()) {
        for key in s.present.iter().chain(&s.uploaded) {
            assert!(
                state.bucket.contains(key),
                "step {step} ({action}): session {} (root {}) relies on {key}, deleted",
                s.id,
                s.root
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_seed() {
    stress(20261121, 1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_from_env() {
    let seed = std::env::var("LARDER_GC_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let steps = std::env::var("LARDER_GC_STRESS_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    println!("reproduce with LARDER_GC_STRESS_SEED={seed} LARDER_GC_STRESS_STEPS={steps}");
    stress(seed, steps).await;
}
