//! "A crash at any point loses no committed data", for garbage collection: `larder gc`
//! is killed with SIGKILL at random moments while live closures and garbage (expired
//! roots sharing a path with live ones, a big expired closure of many objects, abandoned
//! uploads) exist; then the worker is killed while a run it started through the admin
//! API (`DELETE /api/closures`) is under way. After every kill, on both backends:
//! `larder fsck` is clean and every live closure is served whole; a rerun (CLI, or API
//! on the restarted worker) succeeds, and then the garbage is gone from the database and
//! the storage.
//!
//! The moments come from a seed, printed; `LARDER_CRASH_SEED` replays one.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod crash_support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crash_support::{
    block_on, check_served, fsck, get, hash_of, larder, object_files, objects_dir, output_text,
    push, seed,
};
use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_worker::nix::NixHash;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{json, Value};

/// Kills of `larder gc` before the run that must finish.
const CLI_KILLS: usize = 4;
/// Kills of the worker during an API run before the run that must finish.
const API_KILLS: usize = 2;
/// Store paths in each made-up expired closure (a narinfo and a NAR each).
const FAKE_PATHS: usize = 2000;

/// Rows and storage keys of a made-up closure committed through the raw upload API.
struct Fake {
    keys: Vec<String>,
}

/// Commits a made-up closure of `FAKE_PATHS` paths (narinfo + NAR each), named by
/// `salt`: garbage by volume, so a kill lands inside the mark or the sweep.
fn commit_fake_closure(worker: &Worker, salt: &str) -> Fake {
    let mut objects = Vec::new();
    let mut narinfos = Vec::new();
    let mut keys = Vec::new();
    for i in 0..FAKE_PATHS {
        let hash = NixHash::of(format!("{salt}-{i}").as_bytes()).to_base32();
        let narinfo = format!("{}.narinfo", &hash[..32]);
        let nar = format!("nar/{hash}.nar.zst");
        objects.push(json!({"key": nar, "type": "nar", "refs": [], "nar_size": 10}));
        narinfos.push(narinfo.clone());
        keys.push(narinfo);
        keys.push(nar);
    }
    let root = narinfos[0].clone();
    for (i, narinfo) in narinfos.iter().enumerate() {
        let mut refs = vec![keys[2 * i + 1].clone()];
        if i == 0 {
            refs.extend(narinfos[1..].iter().cloned());
        }
        objects.push(json!({"key": narinfo, "type": "narinfo", "refs": refs}));
    }
    let request = json!({"closure": root, "objects": objects});
    block_on(async {
        let started = worker.start_session(&request).await;
        let client = reqwest::Client::new();
        let pending = started["pending_objects"].as_object().unwrap().clone();
        let puts = pending.into_iter().map(|(key, object)| {
            let client = client.clone();
            async move {
                let mut put = client.put(object["presigned_url"].as_str().unwrap());
                if let Some(headers) = object["headers"].as_object() {
                    for (name, value) in headers {
                        put = put.header(name, value.as_str().unwrap());
                    }
                }
                let answer = put.body(format!("bytes of {key}")).send().await.unwrap();
                assert!(
                    answer.status().is_success(),
                    "PUT {key}: {}",
                    answer.status()
                );
            }
        });
        futures_join(puts, 16).await;
        let id = started["id"].as_str().unwrap();
        let done = client
            .post(format!("{}/api/pending_closures/{id}/complete", worker.url))
            .bearer_auth(&worker.token)
            .send()
            .await
            .unwrap();
        assert!(done.status().is_success(), "complete: {}", done.status());
    });
    Fake { keys }
}

/// Starts a session for a made-up path, uploads its NAR and walks away.
fn abandon_an_upload(worker: &Worker, salt: &str) -> String {
    let hash = NixHash::of(salt.as_bytes()).to_base32();
    let narinfo = format!("{}.narinfo", &hash[..32]);
    let nar = format!("nar/{hash}.nar.zst");
    let request = json!({
        "closure": narinfo,
        "objects": [
            {"key": narinfo, "type": "narinfo", "refs": [nar]},
            {"key": nar, "type": "nar", "refs": [], "nar_size": 10},
        ]
    });
    block_on(async {
        let started = worker.start_session(&request).await;
        let object = &started["pending_objects"][&nar];
        let mut put = reqwest::Client::new().put(object["presigned_url"].as_str().unwrap());
        if let Some(headers) = object["headers"].as_object() {
            for (name, value) in headers {
                put = put.header(name, value.as_str().unwrap());
            }
        }
        let answer = put.body("half an upload").send().await.unwrap();
        assert!(answer.status().is_success(), "{}", answer.status());
    });
    nar
}

async fn futures_join<F: std::future::Future<Output = ()>>(
    futures: impl Iterator<Item = F>,
    at_once: usize,
) {
    use futures::StreamExt;
    futures::stream::iter(futures)
        .buffer_unordered(at_once)
        .collect::<Vec<()>>()
        .await;
}

/// Every key in the worker's storage.
fn storage_keys(worker: &Worker) -> BTreeSet<String> {
    match (&worker.backend, objects_dir(worker)) {
        (Backend::Postgres { bucket, .. }, _) => block_on(bucket.keys()).into_iter().collect(),
        (_, Some(dir)) => object_files(&dir, "").into_iter().map(|(k, _)| k).collect(),
        (_, None) => unreachable!("the embedded backend has an objects folder"),
    }
}

/// `--older-than` (and failed uploads) keeping what was pushed at `young` and after,
/// expiring what was pushed 3 s or more before it, however slow the machine is.
fn retention(young: Instant) -> String {
    format!("{}ms", young.elapsed().as_millis() + 1000)
}

fn gc_command(worker: &Worker, young: Instant) -> std::process::Command {
    let keep = retention(young);
    let mut cmd = larder(worker, "gc");
    cmd.args(["--older-than", &keep, "--failed-uploads-older-than", &keep])
        .args(["--grace", "0s", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd
}

/// Live closures are intact: fsck clean, every path served whole.
fn check_live(worker: &Worker, live: &[String], context: &str) {
    if let Err(report) = fsck(worker) {
        panic!("{context}: fsck found damage: {report}");
    }
    for path in live {
        if let Err(e) = check_served(worker, path) {
            panic!("{context}: a live closure lost data: {e}");
        }
    }
}

/// The garbage is gone: no narinfo served, no key left in storage.
fn check_collected(
    worker: &Worker,
    garbage_paths: &[String],
    garbage_keys: &[String],
    context: &str,
) {
    for path in garbage_paths {
        let (status, _) = get(worker, &format!("{}.narinfo", hash_of(path)));
        assert_eq!(status, 404, "{context}: expired {path} is still served");
    }
    let left = storage_keys(worker);
    let kept: Vec<&String> = garbage_keys.iter().filter(|k| left.contains(*k)).collect();
    assert!(
        kept.is_empty(),
        "{context}: garbage left in storage: {kept:?}"
    );
}

/// Starts a run through the admin API; 202 expected.
fn api_gc(worker: &Worker, young: Instant) -> Value {
    let keep = retention(young);
    block_on(async {
        let answer = reqwest::Client::new()
            .delete(format!(
                "{}/api/closures?older-than={keep}&failed-uploads-older-than={keep}&force=true",
                worker.url
            ))
            .bearer_auth(&worker.token)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        let body = answer.text().await.unwrap();
        assert_eq!(status.as_u16(), 202, "DELETE /api/closures: {body}");
        serde_json::from_str(&body).unwrap()
    })
}

/// Polls `/api/gc/status` until the run ends: its final state.
fn api_gc_outcome(worker: &Worker) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = block_on(worker.gc_status());
        if status["state"] != "running" || Instant::now() > deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scenario(test: &str, backend: Backend) {
    let seed = seed("LARDER_CRASH_SEED");
    let mut rng = StdRng::seed_from_u64(seed);
    let paths = Nix::shared().build_closure(
        test,
        &[
            PathSpec::new("shared", 2000, &[]),    // 0: live and in garbage
            PathSpec::new("old-root", 3000, &[0]), // 1: expires in the CLI phase
            PathSpec::new("live-dep", 5000, &[]),  // 2
            PathSpec::new("live-root", 1000, &[0, 2]), // 3: stays
            PathSpec::new("older-root", 3000, &[0]), // 4: expires in the API phase
        ],
    );
    let live: Vec<String> = [0, 2, 3].iter().map(|&i| paths[i].clone()).collect();
    let mut worker = Worker::start(test, backend, &[]);
    let pushed = |worker: &Worker, path: &str| {
        let out = push(worker, &[path], 5);
        assert!(out.status.success(), "push {path}: {}", output_text(&out));
    };

    // CLI phase: garbage, a pause, then the live closure.
    pushed(&worker, &paths[1]);
    let fake = commit_fake_closure(&worker, &format!("{test}-cli"));
    let abandoned = abandon_an_upload(&worker, &format!("{test}-cli"));
    std::thread::sleep(Duration::from_secs(3));
    pushed(&worker, &paths[3]);
    let young = Instant::now();
    let mut garbage_keys = fake.keys;
    garbage_keys.push(abandoned);
    // Aim the kills at the run, not at the process start: time a dry run first.
    let dry = Instant::now();
    let out = gc_command(&worker, young)
        .arg("--dry-run")
        .output()
        .unwrap();
    let dry = dry.elapsed();
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("larder gc --dry-run: {}", output_text(&out)));
    assert!(
        report["objects_marked"].as_u64() > Some(2 * FAKE_PATHS as u64),
        "{report}"
    );
    let startup = dry.saturating_sub(Duration::from_millis(
        report["duration_ms"].as_u64().unwrap(),
    ));
    // Each kill in its own slice of 400 ms from half the start-up on, so that together
    // they reach from before the mark to the sweep (a killed run starts over, and the
    // sweep deletes in batches: a later kill finds work left unless a run finished).
    for kill in 0..CLI_KILLS {
        let after =
            startup / 2 + Duration::from_millis(400 * kill as u64 + rng.random_range(0..400));
        let mut child = gc_command(&worker, young).spawn().unwrap();
        std::thread::sleep(after);
        let finished = child.try_wait().unwrap().is_some();
        child.kill().unwrap_or(());
        let out = child.wait_with_output().unwrap();
        println!(
            "{test}: larder gc killed after {after:?} (finished first: {finished}): {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
        check_live(&worker, &live, &format!("seed {seed}, CLI kill {kill}"));
    }
    let out = gc_command(&worker, young).output().unwrap();
    assert!(
        out.status.success(),
        "seed {seed}: larder gc after {CLI_KILLS} killed runs: {}",
        output_text(&out)
    );
    check_live(&worker, &live, &format!("seed {seed}, after the CLI runs"));
    check_collected(
        &worker,
        &paths[1..2],
        &garbage_keys,
        &format!("seed {seed}, after the CLI runs"),
    );
    worker.substitute(&format!("{test}-cli"), &[&paths[3]]);

    // API phase: new garbage, a pause, the live closure pushed again.
    pushed(&worker, &paths[4]);
    let fake = commit_fake_closure(&worker, &format!("{test}-api"));
    let abandoned = abandon_an_upload(&worker, &format!("{test}-api"));
    std::thread::sleep(Duration::from_secs(3));
    pushed(&worker, &paths[3]);
    let young = Instant::now();
    let mut garbage_keys = fake.keys;
    garbage_keys.push(abandoned);
    for kill in 0..API_KILLS {
        let after = Duration::from_millis(rng.random_range(0..1500));
        api_gc(&worker, young);
        std::thread::sleep(after);
        worker.kill();
        worker.restart();
        println!("{test}: worker killed {after:?} into an API run");
        check_live(&worker, &live, &format!("seed {seed}, API kill {kill}"));
    }
    api_gc(&worker, young);
    let outcome = api_gc_outcome(&worker);
    assert_eq!(
        outcome["state"],
        "succeeded",
        "seed {seed}: API run after {API_KILLS} killed ones: {outcome}\nworker log:\n{}",
        worker.log()
    );
    check_live(&worker, &live, &format!("seed {seed}, after the API runs"));
    check_collected(
        &worker,
        &paths[4..5],
        &garbage_keys,
        &format!("seed {seed}, after the API runs"),
    );
    worker.substitute(&format!("{test}-api"), &[&paths[3]]);
}

#[test]
fn killing_gc_runs_loses_nothing_live_on_the_embedded_default() {
    scenario("crash-gc-dir", Backend::Embedded);
}

#[test]
fn killing_gc_runs_loses_nothing_live_on_postgres_and_garage() {
    let test = "crash-gc-s3";
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database(test),
        bucket: larder_e2e::garage::bucket(test),
    };
    scenario(test, backend);
}
