#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! The binary cache index end to end on PostgreSQL and Garage, through the real `larder`
//! commands: pushes, `larder index build`, `larder index query` answering as a client
//! would; pushes and GC followed through the journal within 5 s without a rebuild; the
//! next build answering from shards; retired epochs deleted only after the grace period.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use larder_e2e::larder::{larder_bin, Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_e2e::process::run;

/// Grace period of the builds here (the format asks ≥ 10 min in production).
const GRACE: Duration = Duration::from_secs(4);

fn store_args(worker: &Worker, cmd: &mut Command) {
    assert!(
        matches!(worker.backend, Backend::Postgres { .. }),
        "this test runs on PostgreSQL and Garage"
    );
    worker.store_args(cmd);
}

fn last_json(out: &str) -> serde_json::Value {
    serde_json::from_str(out.lines().last().unwrap_or("{}")).unwrap()
}

fn push(worker: &Worker, path: &str) -> serde_json::Value {
    let nix = Nix::shared();
    let mut cmd = Command::new(larder_bin());
    cmd.args(["push", "--json", "--quiet", "--server", &worker.url])
        .args(["--token", &worker.token])
        .arg(path)
        .env("NIX_CONF_DIR", nix.conf_dir())
        .env("NIX_REMOTE", "local");
    last_json(&run("larder push", &mut cmd))
}

fn build(worker: &Worker) -> serde_json::Value {
    let mut cmd = Command::new(larder_bin());
    cmd.args(["index", "build", "--json", "--public-url", &worker.url])
        .arg("--grace")
        .arg(format!("{}s", GRACE.as_secs()));
    store_args(worker, &mut cmd);
    last_json(&run("larder index build", &mut cmd))
}

fn gc(worker: &Worker) -> serde_json::Value {
    let mut cmd = Command::new(larder_bin());
    cmd.args(["gc", "--json", "--older-than", "3s", "--grace", "0s"]);
    store_args(worker, &mut cmd);
    last_json(&run("larder gc", &mut cmd))
}

/// `larder index query --json`: each argument's answer, and the requests made.
fn query(worker: &Worker, paths: &[&str]) -> (BTreeMap<String, String>, u64) {
    let out = run(
        "larder index query",
        Command::new(larder_bin())
            .args(["index", "query", "--json", "--cache", &worker.url])
            .args(paths),
    );
    let v = last_json(&out);
    let answers = v["answers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["path"].as_str().unwrap().to_owned(),
                a["answer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    (answers, v["requests"].as_u64().unwrap())
}

/// Asks until every path has the wanted answer; returns how long that took.
fn until_answers(worker: &Worker, want: &[(&str, &str)], within: Duration) -> Duration {
    let start = Instant::now();
    let paths: Vec<&str> = want.iter().map(|(p, _)| *p).collect();
    loop {
        let (got, _) = query(worker, &paths);
        if want
            .iter()
            .all(|(p, a)| got.get(*p).map(String::as_str) == Some(*a))
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "after {:?} the index still answers {got:?}, wanted {want:?}\nworker log:\n{}",
            start.elapsed(),
            worker.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn status(worker: &Worker, path: &str) -> u16 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        reqwest::get(format!("{}/{path}", worker.url))
            .await
            .unwrap()
            .status()
            .as_u16()
    })
}

#[test]
fn index_follows_pushes_and_gc_on_postgres_and_garage() {
    let test = "index-pg";
    let nix = Nix::shared();
    let kept = nix.build_closure(
        &format!("{test}-kept"),
        &[
            PathSpec::new("lib", 1000, &[]),
            PathSpec::new("app", 1000, &[0]),
        ],
    );
    let doomed = nix.build_closure(
        &format!("{test}-doomed"),
        &[PathSpec::new("old", 1000, &[])],
    );
    let later = nix.build_closure(&format!("{test}-later"), &[PathSpec::new("new", 1000, &[])]);
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database(test),
        bucket: larder_e2e::garage::bucket(test),
    };
    let worker = Worker::start(test, backend, &[]);
    let strangers = [
        "00000000000000000000000000000000",
        "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi",
    ];

    // Before any build the cache publishes no index: every answer is unknown.
    let (answers, _) = query(&worker, &[&kept[0]]);
    assert_eq!(answers[&kept[0]], "unknown");

    push(&worker, &kept[1]);
    push(&worker, &doomed[0]);
    let first = build(&worker);
    assert_eq!(
        (first["epoch"].as_u64(), first["item_count"].as_u64()),
        (Some(1), Some(3))
    );
    let mut asked: Vec<&str> = vec![&kept[0], &kept[1], &doomed[0]];
    asked.extend(strangers);
    let (answers, requests) = query(&worker, &asked);
    for p in [&kept[0], &kept[1], &doomed[0]] {
        assert_eq!(answers[p.as_str()], "present", "{p}: {answers:?}");
    }
    for s in strangers {
        assert_eq!(answers[s], "absent", "{s}: {answers:?}");
    }
    // nix-cache-info, 13 journal segments, one shard (depth 0).
    assert_eq!(requests, 1 + 13 + 1);

    // Three seconds on, `kept` is pushed again (its root stays young; nothing is read
    // or uploaded: the index says the cache has it), `later` is new, and GC takes
    // `doomed`, whose root is now older than --older-than.
    std::thread::sleep(Duration::from_secs(3));
    push(&worker, &later[0]);
    let took = until_answers(
        &worker,
        &[(&later[0], "probably-present")],
        Duration::from_secs(5),
    );
    eprintln!("a push reached the published journal in {took:?}");
    let again = push(&worker, &kept[1]);
    assert_eq!(again["paths_uploaded"], 0, "{again}");
    let collected = gc(&worker);
    assert!(
        collected["objects_deleted"].as_u64().unwrap() >= 2,
        "{collected}"
    );
    assert_eq!(
        status(&worker, &format!("{}.narinfo", &doomed[0][11..43])),
        404
    );
    let took = until_answers(&worker, &[(&doomed[0], "absent")], Duration::from_secs(5));
    eprintln!("a GC deletion reached the published journal in {took:?}");
    let (answers, _) = query(&worker, &[&kept[0], &kept[1]]);
    assert!(answers.values().all(|a| a == "present"), "{answers:?}");

    // The next build folds them into the shards.
    let second = build(&worker);
    assert_eq!(
        (second["epoch"].as_u64(), second["previous"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(second["item_count"], 3, "{second}");
    let (answers, _) = query(&worker, &[&kept[0], &kept[1], &later[0], &doomed[0]]);
    assert_eq!(answers[&later[0]], "present", "{answers:?}");
    assert_eq!(answers[&doomed[0]], "absent", "{answers:?}");

    // Epoch 1 retires with the third build and stays for the grace period, then goes.
    let shard_1 = "nix-cache-index/shards/1/root.idx.zst";
    let third = build(&worker);
    assert_eq!(
        (third["epoch"].as_u64(), third["epochs_removed"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(status(&worker, shard_1), 200);
    std::thread::sleep(GRACE + Duration::from_secs(1));
    let fourth = build(&worker);
    assert_eq!(fourth["epochs_removed"], 1, "{fourth}");
    assert_eq!(status(&worker, shard_1), 404);
    // Epoch 2 retired just now: still there; 3 is previous, 4 current.
    assert_eq!(
        status(&worker, "nix-cache-index/shards/2/root.idx.zst"),
        200
    );
    let (answers, _) = query(&worker, &[&kept[0], &kept[1], &later[0]]);
    assert!(answers.values().all(|a| a == "present"), "{answers:?}");
}
