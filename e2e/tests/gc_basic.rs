#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! Garbage collection on both backends, driven by the real clients: `niks3 push`,
//! `niks3 pins`, `niks3 gc` (the admin API), `larder gc` and `larder fsck`, with the
//! real Nix substituting every live closure afterwards.
//!
//! Expired roots go; young and pinned roots keep their whole closure, shared
//! dependencies included; an abandoned upload is cleaned from the bucket; a dry run
//! changes nothing in the database or the bucket; fsck passes, then notices a deletion
//! made behind the cache's back.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use larder_e2e::larder::{larder_bin, Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_e2e::process::run;
use serde_json::{json, Value};
use sqlx::{AnyPool, Row};

/// An abandoned upload: a path no one will ever commit.
const ABANDONED: &str = "0123456789abcdfghijklmnpqrsvwxyz";

fn niks3(worker: &Worker, args: &[&str]) -> String {
    let token_file = worker.data_dir.join("niks3-token");
    std::fs::write(&token_file, &worker.token).unwrap();
    let mut cmd = larder_e2e::niks3::client_command(&worker.url, &token_file);
    cmd.env("NIX_CONF_DIR", Nix::shared().conf_dir())
        .env("NIX_REMOTE", "local");
    run(&format!("niks3 {}", args[0]), cmd.args(args))
}

/// `larder <subcommand>` against the worker's database and storage.
fn larder(worker: &Worker, subcommand: &str, flags: &[&str]) -> Command {
    let mut cmd = Command::new(larder_bin());
    cmd.arg(subcommand).args(flags);
    worker.store_args(&mut cmd);
    cmd
}

fn gc(worker: &Worker, flags: &[String]) -> Value {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let out = run("larder gc", larder(worker, "gc", &flags).arg("--json"));
    serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap()
}

fn hash_of(path: &str) -> &str {
    &path["/nix/store/".len().."/nix/store/".len() + 32]
}

fn narinfo_status(worker: &Worker, path: &str) -> u16 {
    let url = format!("{}/{}.narinfo", worker.url, hash_of(path));
    block_on(async { reqwest::get(url).await.unwrap().status().as_u16() })
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Starts a session for a made-up path, uploads its NAR and walks away.
fn abandon_an_upload(worker: &Worker) -> String {
    let nar = format!("nar/{}.nar.zst", "1".repeat(52));
    let request = json!({
        "closure": format!("{ABANDONED}.narinfo"),
        "objects": [
            {"key": format!("{ABANDONED}.narinfo"), "type": "narinfo", "refs": [nar]},
            {"key": nar, "type": "nar", "refs": [], "nar_size": 10},
        ]
    });
    block_on(async {
        let started = worker.start_session(&request).await;
        let url = started["pending_objects"][&nar]["presigned_url"]
            .as_str()
            .unwrap()
            .to_string();
        let put = reqwest::Client::new()
            .put(url)
            .body("half an upload")
            .send()
            .await
            .unwrap();
        assert!(put.status().is_success(), "{}", put.status());
    });
    nar
}

/// Rows per table, marks and the GC epoch, and every key in the bucket.
#[derive(Debug, PartialEq, Eq)]
struct State {
    rows: Vec<(String, i64)>,
    bucket: BTreeSet<String>,
}

fn state(worker: &Worker) -> State {
    let url = match &worker.backend {
        Backend::Postgres { database, .. } => database.clone(),
        Backend::Embedded => format!("sqlite://{}", worker.data_dir.join("larder.db").display()),
    };
    block_on(async {
        sqlx::any::install_default_drivers();
        let pool = AnyPool::connect(&url).await.unwrap();
        let mut rows = Vec::new();
        for query in [
            "SELECT COUNT(*) FROM objects",
            "SELECT COUNT(*) FROM objects WHERE marked_epoch IS NOT NULL",
            "SELECT COUNT(*) FROM refs",
            "SELECT COUNT(*) FROM closures",
            "SELECT COUNT(*) FROM pending_closures",
            "SELECT COUNT(*) FROM pending_objects",
            "SELECT COUNT(*) FROM pins",
            "SELECT value FROM meta WHERE name = 'gc_epoch'",
        ] {
            let n: i64 = sqlx::query(query).fetch_one(&pool).await.unwrap().get(0);
            rows.push((query.to_string(), n));
        }
        pool.close().await;
        let bucket = match &worker.backend {
            Backend::Postgres { bucket, .. } => bucket.keys().await.into_iter().collect(),
            Backend::Embedded => files(&worker.data_dir.join("objects"), ""),
        };
        State { rows, bucket }
    })
}

/// Object keys of the directory backend: files, minus its dot-named bookkeeping.
fn files(dir: &Path, prefix: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') {
            continue;
        }
        let key = format!("{prefix}{name}");
        if entry.file_type().unwrap().is_dir() {
            keys.extend(files(&entry.path(), &format!("{key}/")));
        } else {
            keys.insert(key);
        }
    }
    keys
}

fn delete_behind_the_caches_back(worker: &Worker, key: &str) {
    match &worker.backend {
        Backend::Postgres { bucket, .. } => block_on(bucket.delete(key)),
        Backend::Embedded => {
            std::fs::remove_file(worker.data_dir.join("objects").join(key)).unwrap()
        }
    }
}

fn scenario(test: &str, backend: Backend) {
    let nix = Nix::shared();
    let paths = nix.build_closure(
        test,
        &[
            PathSpec::new("shared", 2000, &[]),      // 0
            PathSpec::new("old-root", 3000, &[0]),   // 1: expires
            PathSpec::new("young-root", 1000, &[0]), // 2: keeps `shared`
            PathSpec::new("pin-dep", 1500, &[]),     // 3
            PathSpec::new("pinned", 1200, &[3]),     // 4: old, but pinned
        ],
    );
    let worker = Worker::start(test, backend, &[]);
    niks3(&worker, &["push", &paths[1]]);
    niks3(&worker, &["push", &paths[4]]);
    niks3(&worker, &["pins", "create", "keep", &paths[4]]);
    assert!(niks3(&worker, &["pins", "list", "--names-only"]).contains("keep"));
    let abandoned = abandon_an_upload(&worker);
    std::thread::sleep(std::time::Duration::from_secs(3));
    niks3(&worker, &["push", &paths[2]]);
    let mut young = Instant::now();
    // Retention just longer than the young root's age: it stays, however slow this
    // machine is, while everything pushed before the 3 s pause expires.
    let retention = |young: Instant| format!("{}ms", young.elapsed().as_millis() + 1000);
    let flags = |young: Instant| -> Vec<String> {
        let keep = retention(young);
        [
            "--older-than",
            &keep,
            "--failed-uploads-older-than",
            &keep,
            "--grace",
            "0s",
        ]
        .map(String::from)
        .to_vec()
    };
    let before = state(&worker);
    assert!(
        before.bucket.contains(&abandoned),
        "the abandoned upload landed"
    );
    let dry = gc(&worker, &[flags(young), vec!["--dry-run".into()]].concat());
    assert_eq!(
        (dry["dry_run"].clone(), dry["roots_expired"].clone()),
        (json!(true), json!(1)),
        "{dry}"
    );
    assert!(dry["objects_marked"].as_u64().unwrap() >= 3, "{dry}");
    assert_eq!(state(&worker), before, "a dry run changed something");

    let real = gc(&worker, &flags(young));
    assert_eq!(real["roots_expired"], 1, "{real}");
    assert_eq!(real["stale_sessions"], 1, "{real}");
    // The old root's narinfo, NAR and listing, and the abandoned NAR.
    assert!(real["objects_deleted"].as_u64().unwrap() >= 4, "{real}");
    assert_eq!(
        narinfo_status(&worker, &paths[1]),
        404,
        "expired root survived: {real}"
    );
    for kept in [0, 2, 3, 4] {
        assert_eq!(
            narinfo_status(&worker, &paths[kept]),
            200,
            "{} went: {real}",
            paths[kept]
        );
    }
    let after = state(&worker);
    assert!(
        !after.bucket.contains(&abandoned),
        "the abandoned upload is still there"
    );
    worker.substitute(&format!("{test}-young"), &[&paths[2]]);
    worker.substitute(&format!("{test}-pinned"), &[&paths[4]]);
    let again = gc(&worker, &flags(young));
    assert_eq!(again["objects_deleted"], 0, "{again}");

    // The admin API through niks3's own client: it starts a run and polls it to the end.
    niks3(
        &worker,
        &[
            "gc",
            "--older-than",
            "1h",
            "--failed-uploads-older-than",
            "1h",
        ],
    );
    let status = block_on(worker.gc_status());
    assert_eq!(status["state"], "succeeded", "{status}");

    // Runs made by other processes (`larder gc`) show in the worker's metrics.
    let metrics = block_on(async {
        reqwest::get(format!("{}/metrics", worker.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    let runs: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("larder_gc_runs{result=\"success\"} "))
        .unwrap_or_else(|| panic!("no GC run metric in:\n{metrics}"))
        .parse()
        .unwrap();
    assert!(runs >= 3.0, "{runs} successful runs counted");
    assert!(metrics.contains("larder_gc_last_success_timestamp_seconds "));

    // Unpinned, the old closure expires like any other; the young root, pushed again,
    // stays.
    niks3(&worker, &["pins", "delete", "keep"]);
    niks3(&worker, &["push", &paths[2]]);
    young = Instant::now();
    let unpinned = gc(&worker, &flags(young));
    assert_eq!(unpinned["roots_expired"], 1, "{unpinned}");
    assert_eq!(narinfo_status(&worker, &paths[4]), 404);
    assert_eq!(narinfo_status(&worker, &paths[2]), 200);

    run("larder fsck", &mut larder(&worker, "fsck", &["--sizes"]));
    let lost = format!("{}.narinfo", hash_of(&paths[0]));
    delete_behind_the_caches_back(&worker, &lost);
    let fsck = larder(&worker, "fsck", &["--json"]).output().unwrap();
    assert!(!fsck.status.success(), "fsck missed a deleted object");
    let report: Value = serde_json::from_slice(&fsck.stdout).unwrap();
    assert_eq!(report["missing_objects"], json!([lost]), "{report}");
}

#[test]
fn gc_on_postgres_and_garage() {
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database("gc-pg"),
        bucket: larder_e2e::garage::bucket("gc-pg"),
    };
    scenario("gc-pg", backend);
}

#[test]
fn gc_on_the_embedded_default() {
    scenario("gc-embedded", Backend::Embedded);
}
