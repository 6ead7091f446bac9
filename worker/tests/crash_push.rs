//! "A crash at any point loses no committed data", for pushes: several `larder push` of
//! different closures run at once (one with a NAR above the multipart threshold, all
//! sharing one path) while the worker is killed with SIGKILL at a random moment and
//! started again on the same database and storage. After every round, on both backends
//! (PostgreSQL + Garage, and the embedded SQLite + directory default):
//! - `larder fsck --sizes --checksums` is clean;
//! - every push that reported success, this round or an earlier one, is served whole:
//!   narinfos parse, NARs hash to their NarHash; the real Nix substitutes this round's;
//! - a push that failed succeeds when run again;
//! - (directory backend) no object file under its final key holds partial bytes.
//!
//! The moments come from a seed, printed (a kill lands within the time a first round
//! of pushes without a kill took); `LARDER_CRASH_SEED` replays one and
//! `LARDER_CRASH_ROUNDS` changes the number of rounds (default 4).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod crash_support;

use std::process::{Child, Output};
use std::time::{Duration, Instant};

use crash_support::{
    check_served, fsck, larder, leftovers, objects_dir, output_text, partial_objects, push, seed,
    spawn_push,
};
use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Pushes running at once in a round, each of its own closure.
const PUSHES: usize = 3;
/// Size of the one big path per round: above the 10 MiB multipart threshold.
const BIG: u64 = 11 * 1024 * 1024;

/// One closure to push: its paths (the root last).
#[derive(Debug, Clone)]
struct Closure {
    paths: Vec<String>,
}

impl Closure {
    fn root(&self) -> &str {
        self.paths.last().unwrap()
    }
}

/// Builds `rounds × PUSHES` closures; the first of each round holds the big path, and
/// every root references one path shared by all.
fn build(test: &str, rounds: usize) -> Vec<Vec<Closure>> {
    let mut specs = vec![PathSpec::new("shared", 3000, &[])];
    let mut layout = Vec::new();
    for round in 0..rounds {
        let mut closures = Vec::new();
        for push in 0..PUSHES {
            let mut members = vec![0];
            specs.push(PathSpec::new(&format!("leaf-{round}-{push}"), 4096, &[]));
            members.push(specs.len() - 1);
            if push == 0 {
                specs.push(PathSpec::new(&format!("big-{round}"), BIG, &[]));
                members.push(specs.len() - 1);
            }
            let root =
                PathSpec::new(&format!("root-{round}-{push}"), 1000, &members).with_text(20_000);
            specs.push(root);
            members.push(specs.len() - 1);
            closures.push(members);
        }
        layout.push(closures);
    }
    let paths = Nix::shared().build_closure(test, &specs);
    layout
        .into_iter()
        .map(|round| {
            round
                .into_iter()
                .map(|members| Closure {
                    paths: members.iter().map(|&i| paths[i].clone()).collect(),
                })
                .collect()
        })
        .collect()
}

fn scenario(test: &str, backend: Backend) {
    let seed = seed("LARDER_CRASH_SEED");
    let rounds: usize = std::env::var("LARDER_CRASH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(4);
    let mut rng = StdRng::seed_from_u64(seed);
    // One more set than rounds: the first, pushed without a kill, times a round's
    // pushes, so that the kills land while pushes run on this machine, fast or slow.
    let mut closures = build(test, rounds + 1);
    let calibration = closures.remove(0);
    let mut worker = Worker::start(test, backend, &[]);
    let since = Instant::now();
    let children = calibration
        .iter()
        .map(|c| spawn_push(&worker, &[c.root()], 1))
        .collect();
    let (outputs, ended) = wait_all(children, vec![None; PUSHES], since);
    for out in &outputs {
        assert!(out.status.success(), "push: {}", output_text(out));
    }
    let mut committed: Vec<Closure> = calibration;
    let window = ended.into_iter().max().unwrap_or_default().as_millis() as u64 * 6 / 5;
    println!("{test}: pushes take up to {window} ms with a fifth added: kills land in 0..that");
    let started = Instant::now();
    for (round, closures) in closures.iter().enumerate() {
        let kill_after = Duration::from_millis(rng.random_range(0..window.max(100)));
        let down_for = Duration::from_millis(rng.random_range(0..800));
        let attempts: Vec<u32> = (0..PUSHES)
            .map(|_| if rng.random_bool(0.5) { 1 } else { 5 })
            .collect();
        let pushed_at = Instant::now();
        let mut children: Vec<_> = closures
            .iter()
            .zip(&attempts)
            .map(|(c, &a)| spawn_push(&worker, &[c.root()], a))
            .collect();
        let mut ended = vec![None; children.len()];
        while pushed_at.elapsed() < kill_after {
            note_ended(&mut children, &mut ended, pushed_at);
            std::thread::sleep(Duration::from_millis(5));
        }
        worker.kill();
        std::thread::sleep(down_for);
        worker.restart();
        let (outputs, ended) = wait_all(children, ended, pushed_at);
        let ok: Vec<bool> = outputs.iter().map(|o| o.status.success()).collect();
        println!(
            "{test} round {round}: killed after {kill_after:?}, down {down_for:?}, \
             attempts {attempts:?}, pushes succeeded {ok:?}, ended after {ended:?}"
        );
        if let Some(dir) = objects_dir(&worker) {
            println!("  leftovers: {:?}", leftovers(&dir));
        }
        let context = format!("seed {seed}, round {round}");

        // Checks before any retry: what was reported committed is whole.
        let succeeded: Vec<&Closure> = closures
            .iter()
            .zip(&ok)
            .filter(|(_, ok)| **ok)
            .map(|(c, _)| c)
            .collect();
        committed.extend(succeeded.iter().map(|c| (*c).clone()));
        check_round(&worker, &committed, &context);
        if !succeeded.is_empty() {
            let roots: Vec<&str> = succeeded.iter().map(|c| c.root()).collect();
            worker.substitute(&format!("{test}-{round}"), &roots);
        }

        // A failed push succeeds when run again, on the restarted worker.
        for (closure, out) in closures.iter().zip(&outputs) {
            if out.status.success() {
                continue;
            }
            let again = push(&worker, &[closure.root()], 5);
            assert!(
                again.status.success(),
                "{context}: {} failed again after the restart: {}\nfirst attempt: {}\n\
                 worker log:\n{}",
                closure.root(),
                output_text(&again),
                output_text(out),
                worker.log()
            );
            committed.push(closure.clone());
        }
        check_round(&worker, &committed, &format!("{context}, after retries"));
    }
    // What killed uploads left (temporary files, multipart folders on the directory
    // backend; sessions) goes with the next collection past the failed-upload grace,
    // and the collection keeps every committed closure.
    std::thread::sleep(Duration::from_millis(1500));
    let out = larder(&worker, "gc")
        .args(["--older-than", "30d", "--failed-uploads-older-than", "1s"])
        .args(["--grace", "0s", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "larder gc: {}", output_text(&out));
    println!("{test}: gc {}", String::from_utf8_lossy(&out.stdout).trim());
    check_round(&worker, &committed, &format!("seed {seed}, after gc"));
    if let Some(dir) = objects_dir(&worker) {
        let left = leftovers(&dir);
        assert!(
            left.is_empty(),
            "seed {seed}: killed uploads left these behind after gc: {left:?}"
        );
    }
    println!(
        "{test}: {rounds} rounds, {} kills, {:?}",
        rounds,
        started.elapsed()
    );
}

/// Records in `ended` when each push that has ended since the last look ended.
fn note_ended(children: &mut [Child], ended: &mut [Option<Duration>], since: Instant) {
    for (child, end) in children.iter_mut().zip(ended.iter_mut()) {
        if end.is_none() && child.try_wait().unwrap().is_some() {
            *end = Some(since.elapsed());
        }
    }
}

/// Waits for every push: their outputs, and when each ended after `since`.
fn wait_all(
    mut children: Vec<Child>,
    mut ended: Vec<Option<Duration>>,
    since: Instant,
) -> (Vec<Output>, Vec<Duration>) {
    while ended.iter().any(Option::is_none) {
        note_ended(&mut children, &mut ended, since);
        std::thread::sleep(Duration::from_millis(20));
    }
    let outputs = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect();
    (outputs, ended.into_iter().flatten().collect())
}

/// fsck is clean, every committed closure is served whole, and (directory backend) no
/// object file holds partial bytes.
fn check_round(worker: &Worker, committed: &[Closure], context: &str) {
    if let Err(report) = fsck(worker) {
        panic!("{context}: fsck found damage: {report}");
    }
    for closure in committed {
        for path in &closure.paths {
            if let Err(e) = check_served(worker, path) {
                panic!("{context}: committed data lost: {e}");
            }
        }
    }
    if let Some(dir) = objects_dir(worker) {
        let partial = partial_objects(&dir);
        assert!(
            partial.is_empty(),
            "{context}: objects with partial bytes under their final key: {partial:?}"
        );
    }
}

#[test]
fn killing_the_worker_during_pushes_loses_nothing_on_the_embedded_default() {
    scenario("crash-push-dir", Backend::Embedded);
}

#[test]
fn killing_the_worker_during_pushes_loses_nothing_on_postgres_and_garage() {
    let test = "crash-push-s3";
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database(test),
        bucket: larder_e2e::garage::bucket(test),
    };
    scenario(test, backend);
}
