//! `larder index build` and `larder index query` at scale, against PostgreSQL and Garage:
//! numbers, not tests (docs/benchmarks.md, "Index").
//!
//! ```text
//! . e2e/tools/install-all.sh
//! cargo build --release --bin larder
//! LARDER_BIN=$CARGO_TARGET_DIR/release/larder cargo bench -p larder-worker --bench index_build
//! ```
//!
//! 1. A release `larder serve` on a fresh database and bucket; `objects` filled with N
//!    random narinfo keys by COPY, then `VACUUM ANALYZE` (neither measured).
//! 2. `larder index build` under `/usr/bin/time -v`: wall time, peak RSS, shard bytes
//!    against the exact-set bound log2 C(2^160, N) / 8.
//! 3. 0.1 % more narinfos, and a second build (deltas from the first epoch).
//! 4. `larder index query --json` for Q paths (half indexed, half not): its requests
//!    against shards touched + manifest + journal segments, cross-checked with the
//!    worker's own request counter, and every answer checked.
//!
//! Tunables: `LARDER_BENCH_INDEX_N` (10,000,000), `LARDER_BENCH_INDEX_QUERIES` (10,000);
//! `LARDER_INDEX_JOBS` reaches `larder index build --jobs`; `LARDER_BENCH_INDEX_FIRST_ONLY=1`
//! stops after the first build (for quick iterations on its wall time).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed benchmark step should panic

use std::collections::HashSet;
use std::process::Command;
use std::time::Instant;

use larder_e2e::larder::{larder_bin, Backend, Worker};
use larder_worker::index::hash::{format_hash, Depth};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ruint::aliases::U160;
use serde_json::Value;
use sqlx::Connection;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

fn random_hashes(rng: &mut StdRng, n: usize) -> Vec<String> {
    (0..n)
        .map(|_| {
            format_hash(U160::from_limbs([
                rng.random(),
                rng.random(),
                rng.random::<u32>() as u64,
            ]))
        })
        .collect()
}

/// Adds `n` random narinfo rows with COPY (the fastest way in; not what is measured),
/// returning the first `keep` hash parts.
async fn fill(url: &str, rng: &mut StdRng, n: usize, keep: usize) -> Vec<String> {
    let mut conn = sqlx::postgres::PgConnection::connect(url).await.unwrap();
    let mut copy = conn
        .copy_in_raw("COPY objects (key, kind, created_at, touched_at) FROM STDIN")
        .await
        .unwrap();
    let mut kept = Vec::with_capacity(keep);
    let mut left = n;
    while left > 0 {
        let chunk = random_hashes(rng, left.min(100_000));
        left -= chunk.len();
        let room = keep - kept.len();
        kept.extend(chunk.iter().take(room).cloned());
        let mut buf = String::with_capacity(chunk.len() * 48);
        for h in &chunk {
            buf.push_str(h);
            buf.push_str(".narinfo\t0\t0\t0\n");
        }
        copy.send(buf.into_bytes()).await.unwrap();
    }
    copy.finish().await.unwrap();
    sqlx::query("ANALYZE objects")
        .execute(&mut conn)
        .await
        .unwrap();
    kept
}

/// `VACUUM ANALYZE objects`, timed: a freshly COPY-loaded table has no hint bits or
/// visibility map yet, and its autovacuum would otherwise run during the first build. A
/// long-lived cache's table is vacuumed in the background long before a nightly build,
/// so this measures the build alone.
async fn vacuum(url: &str) {
    let mut conn = sqlx::postgres::PgConnection::connect(url).await.unwrap();
    let started = Instant::now();
    sqlx::query("VACUUM ANALYZE objects")
        .execute(&mut conn)
        .await
        .unwrap();
    println!(
        "VACUUM ANALYZE objects in {:.1} s (not measured)",
        started.elapsed().as_secs_f64()
    );
}

fn store_args(worker: &Worker, cmd: &mut Command) {
    assert!(
        matches!(worker.backend, Backend::Postgres { .. }),
        "the benchmark runs on PostgreSQL and Garage"
    );
    worker.store_args(cmd);
}

/// CPU seconds (user + system, children reaped included) of this run's PostgreSQL
/// (its postmaster: a build's backends are reaped when it exits) and Garage, found by
/// their command lines naming the scratch folder.
fn service_cpu(scratch: &std::path::Path) -> (f64, f64) {
    let ticks = 100.0; // USER_HZ on Linux
    let scratch = scratch.to_string_lossy();
    let (mut postgres, mut garage) = (0.0, 0.0);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (0.0, 0.0);
    };
    for entry in dir.flatten() {
        let path = entry.path();
        let Ok(cmdline) = std::fs::read(path.join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if !cmdline.contains(scratch.as_ref()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(path.join("stat")) else {
            continue;
        };
        // Fields after the command name: utime, stime, cutime, cstime are 14..=17.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        if f.len() < 15 {
            continue;
        }
        let cpu = (f[11] + f[12] + f[13] + f[14]) / ticks;
        let name = cmdline.split_whitespace().next().unwrap_or("");
        if name.ends_with("/postgres") || name == "postgres" {
            postgres += cpu;
        } else if name.ends_with("/garage") || name == "garage" {
            garage += cpu;
        }
    }
    (postgres, garage)
}

/// Runs `larder index build` under `/usr/bin/time -v`: its summary, wall seconds, peak
/// RSS, and how long reading the narinfos took (from its debug log). With `folder`, the
/// files go to that local folder instead of the bucket.
fn build(worker: &Worker, folder: Option<&std::path::Path>) -> Built {
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-v")
        .arg(larder_bin())
        .args(["index", "build", "--json", "--public-url", &worker.url])
        .env("LARDER_LOG", "larder_worker::index=debug")
        .env("NO_COLOR", "1");
    match folder {
        None => store_args(worker, &mut cmd),
        Some(folder) => {
            let Backend::Postgres { database, .. } = &worker.backend else {
                unreachable!("the benchmark runs on PostgreSQL and Garage")
            };
            cmd.arg("--data-dir")
                .arg(&worker.data_dir)
                .args(["--database", database, "--storage"])
                .arg(folder);
        }
    }
    let scratch = std::env::temp_dir();
    let services_before = service_cpu(&scratch);
    let started = Instant::now();
    let out = cmd.output().unwrap();
    let wall = started.elapsed().as_secs_f64();
    // The build's PostgreSQL backends exit (and are reaped into the postmaster's child
    // times) only after they see its connections close.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let services_after = service_cpu(&scratch);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "larder index build failed:\n{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let field = |name: &str| -> f64 {
        stderr
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    let rss_kib = field("Maximum resident set size (kbytes):") as u64;
    let larder_cpu = field("User time (seconds):") + field("System time (seconds):");
    // Logs carry no colour codes when stderr is not a terminal.
    let read = stderr
        .lines()
        .find(|l| l.contains("read every narinfo"))
        .and_then(|l| l.split("ms=").nth(1))
        .and_then(|v| v.split_whitespace().next())
        .unwrap_or("?")
        .to_owned();
    Built {
        summary,
        wall,
        rss_kib,
        read,
        cpu: [
            larder_cpu,
            services_after.0 - services_before.0,
            services_after.1 - services_before.1,
        ],
    }
}

/// What one `larder index build` cost.
struct Built {
    summary: Value,
    wall: f64,
    rss_kib: u64,
    /// Milliseconds until the last narinfo was read (from the debug log).
    read: String,
    /// CPU seconds of `larder index build`, PostgreSQL and Garage while it ran.
    cpu: [f64; 3],
}

/// log2 C(2^160, n) = Σ_{i<n} log2(2^160 − i) − log2 n!, and 2^160 − i ≈ 2^160 here.
fn exact_set_bound_bytes(n: u64) -> f64 {
    let log2_fact: f64 = (1..=n).map(|i| (i as f64).log2()).sum();
    (n as f64 * 160.0 - log2_fact) / 8.0
}

fn report_build(what: &str, built: &Built) {
    let (summary, wall, rss_kib, read) = (&built.summary, built.wall, built.rss_kib, &built.read);
    let [larder, postgres, garage] = built.cpu;
    let n = summary["item_count"].as_u64().unwrap();
    let bound = exact_set_bound_bytes(n);
    let raw = summary["shard_bytes"].as_u64().unwrap() as f64;
    let stored = summary["stored_bytes"].as_u64().unwrap() as f64;
    println!("\n## {what}");
    println!("summary: {summary}");
    println!("wall time: {wall:.1} s (target < 60 s); reading the narinfos took {read} ms");
    println!(
        "peak RSS: {:.1} MiB (target < 150 MB)",
        rss_kib as f64 / 1024.0
    );
    println!(
        "CPU: larder {larder:.1} s, PostgreSQL {postgres:.1} s, Garage {garage:.1} s \
         (total {:.1} s; the load of other work on the machine is not included)",
        larder + postgres + garage
    );
    println!(
        "shards: {} bytes decompressed = {:.4}x the exact-set bound of {bound:.0} bytes \
         ({:.2} bits/item); {} bytes stored (zstd) = {:.4}x (target <= 1.05x)",
        raw,
        raw / bound,
        raw * 8.0 / n as f64,
        stored,
        stored / bound
    );
}

/// The worker's count of requests for the index's routes (nix-cache-info included).
async fn served_index_requests(url: &str) -> u64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("larder_http_requests_total{"))
        .filter(|l| l.contains("/nix-cache-index/") || l.contains("route=\"/nix-cache-info\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Points this run's temporary files (PostgreSQL's and Garage's data: gigabytes at 10M
/// narinfos) at one folder that a watchdog removes once the benchmark has exited.
fn scratch_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("larder-bench-index-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Nothing else runs yet; the services started later inherit it.
    std::env::set_var("TMPDIR", &dir);
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; sleep 5; rm -rf '{}'",
        std::process::id(),
        dir.display()
    );
    // The watchdog outlives this process on purpose: nobody waits for it.
    let _watchdog = Command::new("sh")
        .args(["-c", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    dir
}

fn main() {
    // Before any thread exists: it sets TMPDIR.
    let scratch = scratch_dir();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(run(scratch));
}

async fn run(scratch: std::path::PathBuf) {
    let n = env_usize("LARDER_BENCH_INDEX_N", 10_000_000);
    let queries = env_usize("LARDER_BENCH_INDEX_QUERIES", 10_000);
    println!("# Index benchmarks");
    println!("larder: {}", larder_bin().display());
    println!("scratch: {}", scratch.display());
    println!(
        "cores: {:?}",
        std::thread::available_parallelism().map(|n| n.get())
    );
    print_load("start");
    let backend = Backend::Postgres {
        database: larder_e2e::postgres::database("bench-index"),
        bucket: larder_e2e::garage::bucket("bench-index"),
    };
    let Backend::Postgres { database, .. } = &backend else {
        unreachable!()
    };
    let url = database.clone();
    let worker = Worker::start("bench-index", backend, &[]);

    let mut rng = StdRng::seed_from_u64(195);
    let started = Instant::now();
    let members = fill(&url, &mut rng, n, queries / 2).await;
    println!(
        "\nfilled objects with {n} narinfo keys in {:.1} s (not measured)",
        started.elapsed().as_secs_f64()
    );
    vacuum(&url).await;

    let first = build(&worker, None);
    report_build(
        &format!("larder index build, first epoch, {n} narinfos"),
        &first,
    );
    if std::env::var("LARDER_BENCH_INDEX_FIRST_ONLY").is_ok_and(|v| v == "1") {
        print_load("end");
        return;
    }
    let more = n / 1000;
    fill(&url, &mut rng, more, 0).await;
    let second = build(&worker, None);
    report_build(
        &format!("larder index build, next epoch with deltas, {more} more"),
        &second,
    );
    let second = second.summary;
    // Queries: half indexed, half random.
    let mut asked: Vec<String> = members;
    let strangers = random_hashes(&mut rng, queries - asked.len());
    asked.extend(strangers.iter().cloned());
    let depth = Depth::new(second["depth"].as_u64().unwrap()).unwrap();
    let shards: HashSet<String> = asked
        .iter()
        .map(|h| h[..depth.get() as usize].to_owned())
        .collect();
    let info = reqwest::get(format!("{}/nix-cache-info", worker.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let retention: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("IndexJournalRetentionCount: "))
        .unwrap()
        .parse()
        .unwrap();
    let served_before = served_index_requests(&worker.url).await;
    let started = Instant::now();
    let out = Command::new(larder_bin())
        .args(["index", "query", "--json", "--cache", &worker.url])
        .args(&asked)
        .output()
        .unwrap();
    let took = started.elapsed().as_secs_f64();
    assert!(out.status.success());
    let served = served_index_requests(&worker.url).await - served_before;
    let v: Value =
        serde_json::from_slice(out.stdout.split(|&b| b == b'\n').next().unwrap()).unwrap();
    let answers = v["answers"].as_array().unwrap();
    let wrong = answers
        .iter()
        .enumerate()
        .filter(|(i, a)| {
            let want = if *i < queries / 2 {
                "present"
            } else {
                "absent"
            };
            a["answer"] != want
        })
        .count();
    let bound = shards.len() as u64 + 1 + (retention + 1);
    println!(
        "\n## larder index query, {queries} paths ({} indexed)",
        queries / 2
    );
    println!("wall time: {took:.2} s; wrong answers: {wrong}");
    println!(
        "requests: {} by the client, {served} served by the worker; bound: {} shards touched \
         + 1 manifest (nix-cache-info) + {} journal segments = {bound}",
        v["requests"],
        shards.len(),
        retention + 1
    );
    // The same build into a local folder: what the bucket's PUTs cost. (Its deltas find
    // no previous shards there and are skipped.)
    let folder = tempfile::tempdir().unwrap();
    let local = build(&worker, Some(folder.path()));
    report_build(
        "larder index build into a local folder instead of Garage",
        &local,
    );
    print_load("end");
}

/// Prints `/proc/loadavg`: the numbers are only as good as the machine was quiet.
fn print_load(when: &str) {
    println!(
        "\nload at {when}: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
