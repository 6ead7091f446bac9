//! Garbage collection at scale: Larder's collector against niks3-server's, on the same
//! synthetic cache (see `dataset.rs`) loaded into each one's PostgreSQL schema.
//!
//! `cargo bench -p larder-worker --bench gc` (after `. e2e/tools/install-all.sh`)
//! prints the dataset, both runs and the targets. It is not a test: `cargo test` never
//! runs it. Environment:
//! - `LARDER_BENCH_PATHS` store paths (default 1000000; 100000 for a quick run);
//! - `LARDER_BENCH_SEED` (default 1);
//! - `LARDER_BENCH_ONLY` `larder` or `niks3` to run one collector;
//! - `LARDER_BENCH_BIN` the `larder` binary to run (default: the one cargo built with
//!   this benchmark);
//! - `LARDER_BENCH_PG` admin URL of a running PostgreSQL to use instead of starting one;
//! - `LARDER_BENCH_KEEP=1` keeps the databases; `LARDER_BENCH_LOAD_ONLY=1` also skips
//!   the collections (to experiment on a loaded database);
//! - `LARDER_BENCH_TIMEOUT_SECS` per collector (default 1800), after which it is
//!   stopped and reported as timed out.
//!
//! Both collectors run as their real binaries (`larder gc`, niks3-server through
//! `DELETE /api/closures?older-than=…&force=true`) against one PostgreSQL cluster from
//! the e2e harness, one database each, and the same stub S3 endpoint, which deletes
//! nothing and answers at once: the times are the databases' side of the collection
//! plus the clients' HTTP round trips to the stub, which Larder reports separately.

// A benchmark that meets a broken invariant should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dataset;
mod load;
mod probe;
mod stub_s3;

use std::process::Stdio;
use std::time::{Duration, Instant};

use larder_e2e::niks3::{Niks3Server, S3Bucket};
use larder_e2e::postgres::Postgres;
use sqlx::{Connection, Executor, PgConnection, Row};
use tokio::sync::watch;

use dataset::{Dataset, DAY_MS, OLDER_THAN_HOURS};
use probe::Peaks;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => v
            .replace('_', "")
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

fn load_only() -> bool {
    std::env::var("LARDER_BENCH_LOAD_ONLY").is_ok_and(|v| v == "1")
}

fn now_ms() -> i64 {
    larder_worker::db::now_ms()
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

fn mb(kb: u64) -> String {
    format!("{} MB", kb / 1024)
}

/// One collector's run.
#[derive(Debug, Default)]
struct Run {
    /// Request to end of collection (niks3: before its VACUUM).
    total: Duration,
    /// Stale uploads, root expiry and the mark.
    mark: Duration,
    /// The sweep, bucket calls included.
    sweep: Duration,
    /// Time Larder spent in bucket calls (to the stub), within the sweep.
    bucket: Option<Duration>,
    /// niks3's phases before its mark (stale uploads, root expiry).
    niks3_before_mark: Option<Duration>,
    /// niks3's closing VACUUM ANALYZE.
    vacuum: Option<Duration>,
    roots_expired: u64,
    marked: u64,
    deleted: u64,
    peaks: Peaks,
    /// Temporary files PostgreSQL wrote during the run: (files, bytes).
    temp: (i64, i64),
    /// Multi-object deletes the stub received: (requests, keys).
    bucket_calls: (u64, u64),
    load_before: String,
    timed_out: bool,
}

fn main() {
    // `cargo bench` passes --bench; anything else (a test run) has nothing to do here.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("gc benchmark: run it with `cargo bench -p larder-worker --bench gc`");
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(bench());
}

async fn bench() {
    let ds = Dataset::new(
        env_u64("LARDER_BENCH_PATHS", 1_000_000),
        env_u64("LARDER_BENCH_SEED", 1),
    );
    let timeout = Duration::from_secs(env_u64("LARDER_BENCH_TIMEOUT_SECS", 1800));
    let only = std::env::var("LARDER_BENCH_ONLY").unwrap_or_default();

    println!("# GC benchmark, {} store paths, seed {}", ds.paths, ds.seed);
    describe(&ds);
    let stub = stub_s3::start().await;
    let pg = Cluster::open().await;
    settings(&pg.admin_url).await;

    let larder = if only.is_empty() || only == "larder" {
        Some(bench_larder(&pg, &ds, &stub, timeout).await)
    } else {
        None
    };
    let niks3 = if only.is_empty() || only == "niks3" {
        Some(bench_niks3(&pg, &ds, &stub, timeout).await)
    } else {
        None
    };
    report(larder.as_ref(), niks3.as_ref());
}

/// Dataset shape, computed from the generator alone.
fn describe(ds: &Dataset) {
    let started = Instant::now();
    let cutoff = OLDER_THAN_HOURS * 3_600_000;
    let (mut refs, mut roots, mut expired, mut max_deps) = (0u64, 0u64, 0u64, 0usize);
    let mut indegree = vec![0u32; ds.paths as usize];
    for i in 0..ds.paths {
        let p = ds.path(i);
        refs += 2 + p.deps.len() as u64;
        max_deps = max_deps.max(p.deps.len());
        for &d in &p.deps {
            indegree[d as usize] += 1;
        }
        if let Some(age) = p.root_age {
            roots += 1;
            expired += u64::from(age > cutoff);
        }
    }
    indegree.sort_unstable_by(|a, b| b.cmp(a));
    let top: u64 = indegree[..(ds.paths as usize / 100).max(1)]
        .iter()
        .map(|&d| u64::from(d))
        .sum();
    let deps = refs - 2 * ds.paths;
    println!(
        "dataset: {} paths, {} objects, {} references ({:.2} dependencies per narinfo, \
         at most {max_deps}); {roots} roots, {expired} of them older than {OLDER_THAN_HOURS} h \
         ({:.1} days), {} pins, {} pending sessions; most referenced path: {} dependants, \
         the top 1 % of paths take {:.0} % of dependency references (generated in {})",
        ds.paths,
        3 * ds.paths,
        refs,
        deps as f64 / ds.paths as f64,
        cutoff as f64 / DAY_MS as f64,
        ds.pins().len(),
        dataset::PENDING_SESSIONS,
        indegree[0],
        100.0 * top as f64 / deps.max(1) as f64,
        secs(started.elapsed())
    );
}

async fn settings(admin_url: &str) {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    let mut line = String::from("postgresql:");
    for name in [
        "server_version",
        "shared_buffers",
        "work_mem",
        "maintenance_work_mem",
        "temp_buffers",
        "fsync",
        "synchronous_commit",
    ] {
        let value: String = sqlx::query(sqlx::AssertSqlSafe(format!("SHOW {name}")))
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
        line.push_str(&format!(" {name}={value}"));
    }
    println!("{line}");
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        probe::load_average()
    );
}

fn db_name(url: &str) -> String {
    url.rsplit('/').next().unwrap().to_string()
}

async fn database_size(admin_url: &str, name: &str) -> String {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query("SELECT pg_size_pretty(pg_database_size($1))")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0)
}

/// The PostgreSQL cluster the databases live in.
struct Cluster {
    admin_url: String,
    keep: bool,
}

impl Cluster {
    /// `LARDER_BENCH_PG`, else the e2e harness's throwaway cluster.
    async fn open() -> Cluster {
        let admin_url = match std::env::var("LARDER_BENCH_PG") {
            Ok(url) => url,
            Err(_) => tokio::task::spawn_blocking(Postgres::shared)
                .await
                .unwrap()
                .admin_url(),
        };
        Cluster {
            admin_url,
            keep: std::env::var("LARDER_BENCH_KEEP").is_ok_and(|v| v == "1"),
        }
    }

    /// Creates an empty database and returns its URL.
    async fn database(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", std::process::id());
        let mut conn = PgConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .await
            .unwrap();
        let (base, _) = self.admin_url.rsplit_once('/').unwrap();
        format!("{base}/{name}")
    }

    /// Drops a database (it holds gigabytes), unless asked to keep it.
    async fn finish(&self, name: &str) {
        if self.keep {
            println!("kept database {name}");
            return;
        }
        let mut conn = PgConnection::connect(&self.admin_url).await.unwrap();
        conn.execute(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE \"{name}\" WITH (FORCE)"
        )))
        .await
        .unwrap();
    }
}

async fn cancel_backends(admin_url: &str, name: &str) {
    let mut conn = PgConnection::connect(admin_url).await.unwrap();
    sqlx::query("SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE datname = $1")
        .bind(name)
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn bench_larder(
    pg: &Cluster,
    ds: &Dataset,
    stub: &stub_s3::StubS3,
    timeout: Duration,
) -> Run {
    let admin_url = pg.admin_url.clone();
    let url = pg.database("gc_bench_larder").await;
    let name = db_name(&url);
    let db = larder_worker::db::Db::connect(&url).await.unwrap();
    db.migrate().await.unwrap();
    db.pool().close().await;
    let started = Instant::now();
    let loaded = load::larder(&url, ds, now_ms()).await;
    println!(
        "larder: loaded {loaded:?} in {}; database {}",
        secs(started.elapsed()),
        database_size(&admin_url, &name).await
    );

    if load_only() {
        pg.finish(&name).await;
        return Run::default();
    }
    let mut run = Run {
        load_before: probe::load_average(),
        ..Run::default()
    };
    let temp_before = probe::temp_usage(&admin_url, &name).await;
    let calls_before = stub.counters.snapshot();
    let larder_bin =
        std::env::var("LARDER_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_larder").into());
    let mut cmd = tokio::process::Command::new(larder_bin);
    let older_than = format!("{OLDER_THAN_HOURS}h");
    cmd.args(["gc", "--older-than", &older_than, "--grace", "0s", "--json"])
        .args([
            "--database",
            &url,
            "--s3-bucket",
            "bench",
            "--s3-endpoint",
            &stub.url,
        ])
        .args(["--s3-region", "us-east-1", "--s3-path-style"])
        .args([
            "--s3-access-key-id",
            "bench",
            "--s3-secret-access-key",
            "bench",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("LARDER_") {
            cmd.env_remove(name);
        }
    }
    let started = Instant::now();
    let child = cmd.spawn().unwrap();
    let pid = child.id().unwrap();
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(probe::sample(admin_url.clone(), pid, name.clone(), stopped));
    let output = tokio::time::timeout(timeout, child.wait_with_output()).await;
    run.total = started.elapsed();
    let _ = stop.send(true);
    run.peaks = sampler.await.unwrap();
    match output {
        Err(_) => {
            run.timed_out = true;
            cancel_backends(&admin_url, &name).await;
        }
        Ok(output) => {
            let output = output.unwrap();
            let stdout = String::from_utf8_lossy(&output.stdout);
            assert!(
                output.status.success(),
                "larder gc failed ({}):\n{stdout}\n{}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
            let summary: serde_json::Value =
                serde_json::from_str(stdout.lines().last().unwrap_or("{}")).unwrap();
            println!("larder: summary {summary}");
            let ms = |field: &str| summary[field].as_u64().map(Duration::from_millis);
            run.mark = ms("mark_ms").unwrap_or_default();
            run.sweep = ms("sweep_ms").unwrap_or_default();
            run.bucket = ms("bucket_ms");
            run.roots_expired = summary["roots_expired"].as_u64().unwrap_or(0);
            run.marked = summary["objects_marked"].as_u64().unwrap_or(0);
            run.deleted = summary["objects_deleted"].as_u64().unwrap_or(0);
        }
    }
    let temp_after = probe::temp_usage(&admin_url, &name).await;
    run.temp = (temp_after.0 - temp_before.0, temp_after.1 - temp_before.1);
    let calls_after = stub.counters.snapshot();
    run.bucket_calls = (
        calls_after.0 - calls_before.0,
        calls_after.1 - calls_before.1,
    );
    println!("larder: {run:?}");
    pg.finish(&name).await;
    run
}

/// niks3-server's pid, found by the listen address only it was given.
fn niks3_pid(server: &Niks3Server) -> u32 {
    let addr = server.url().trim_start_matches("http://");
    let flag = format!("--http-addr={addr}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.split(|&b| b == 0).any(|arg| arg == flag.as_bytes()) {
            return pid;
        }
    }
    panic!("no process listens with {flag}");
}

async fn bench_niks3(pg: &Cluster, ds: &Dataset, stub: &stub_s3::StubS3, timeout: Duration) -> Run {
    let admin_url = pg.admin_url.clone();
    let url = pg.database("gc_bench_niks3").await;
    let name = db_name(&url);
    let bucket = S3Bucket {
        endpoint: stub.url.clone(),
        region: "us-east-1".into(),
        bucket: "bench".into(),
        access_key: "bench".into(),
        secret_key: "bench-secret".into(),
    };
    // It migrates its schema before it listens.
    let server = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || Niks3Server::start(&url, &bucket, None))
            .await
            .unwrap()
    };
    let started = Instant::now();
    let loaded = load::niks3(&url, ds).await;
    println!(
        "niks3: loaded {loaded:?} in {}; database {}",
        secs(started.elapsed()),
        database_size(&admin_url, &name).await
    );

    if load_only() {
        drop(server);
        pg.finish(&name).await;
        return Run::default();
    }
    let pid = niks3_pid(&server);
    let token = std::fs::read_to_string(server.token_file()).unwrap();
    let token = token.trim();
    let http = reqwest::Client::new();
    let mut run = Run {
        load_before: probe::load_average(),
        ..Run::default()
    };
    let temp_before = probe::temp_usage(&admin_url, &name).await;
    let calls_before = stub.counters.snapshot();
    probe::reset_peak(pid);
    let (stop, stopped) = watch::channel(false);
    let sampler = tokio::spawn(probe::sample(admin_url.clone(), pid, name.clone(), stopped));
    let started = Instant::now();
    let response = http
        .delete(format!(
            "{}/api/closures?older-than={OLDER_THAN_HOURS}h&force=true",
            server.url()
        ))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        202,
        "{:?}",
        response.text().await
    );
    let (mut orphans, mut marked, mut vacuum) = (None, None, None);
    let status = loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let status: serde_json::Value = http
            .get(format!("{}/api/gc/status", server.url()))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let now = started.elapsed();
        match status["phase"].as_str() {
            Some("cleanup_orphan_objects") => {
                orphans.get_or_insert(now);
            }
            Some("vacuum_tables") => {
                vacuum.get_or_insert(now);
            }
            _ => {}
        }
        if status["stats"]["objects_marked_for_deletion"].as_u64() > Some(0) {
            marked.get_or_insert(now);
        }
        if status["state"] != "running" {
            break status;
        }
        if now > timeout {
            run.timed_out = true;
            break status;
        }
    };
    let end = started.elapsed();
    let _ = stop.send(true);
    run.peaks = sampler.await.unwrap();
    println!("niks3: status {status}");
    if run.timed_out {
        cancel_backends(&admin_url, &name).await;
    } else {
        assert_eq!(status["state"], "succeeded", "niks3 GC failed: {status}");
        let orphans = orphans.unwrap_or_default();
        let marked = marked.unwrap_or(orphans);
        let vacuum = vacuum.unwrap_or(end);
        run.niks3_before_mark = Some(orphans);
        run.mark = marked - orphans;
        run.sweep = vacuum - marked;
        run.vacuum = Some(end - vacuum);
        run.total = vacuum;
        let stats = &status["stats"];
        run.roots_expired = stats["old_closures_deleted"].as_u64().unwrap_or(0);
        run.marked = stats["objects_marked_for_deletion"].as_u64().unwrap_or(0);
        run.deleted = stats["objects_deleted_after_grace_period"]
            .as_u64()
            .unwrap_or(0);
    }
    if run.timed_out {
        run.total = end;
    }
    let temp_after = probe::temp_usage(&admin_url, &name).await;
    run.temp = (temp_after.0 - temp_before.0, temp_after.1 - temp_before.1);
    let calls_after = stub.counters.snapshot();
    run.bucket_calls = (
        calls_after.0 - calls_before.0,
        calls_after.1 - calls_before.1,
    );
    println!("niks3: {run:?}");
    drop(server);
    pg.finish(&name).await;
    run
}

/// One column of the report: how a run's figure is printed.
type Column = Box<dyn Fn(&Run) -> String>;

fn report(larder: Option<&Run>, niks3: Option<&Run>) {
    let cell = |run: Option<&Run>, f: &dyn Fn(&Run) -> String| match run {
        None => "not run".to_string(),
        Some(r) if r.timed_out => format!("timed out after {}", secs(r.total)),
        Some(r) => f(r),
    };
    let rows: Vec<(&str, Column)> = vec![
        (
            "GC run, end to end (niks3: without its VACUUM)",
            Box::new(|r| secs(r.total)),
        ),
        (
            "stale uploads + root expiry + mark",
            Box::new(|r| secs(r.mark + r.niks3_before_mark.unwrap_or_default())),
        ),
        (
            "  of which niks3's stale uploads + root expiry",
            Box::new(|r| r.niks3_before_mark.map_or("-".into(), secs)),
        ),
        (
            "sweep, bucket calls to the stub included",
            Box::new(|r| secs(r.sweep)),
        ),
        (
            "  of which bucket calls (measured by Larder)",
            Box::new(|r| r.bucket.map_or("-".into(), secs)),
        ),
        (
            "niks3's closing VACUUM ANALYZE",
            Box::new(|r| r.vacuum.map_or("-".into(), secs)),
        ),
        ("roots expired", Box::new(|r| r.roots_expired.to_string())),
        ("objects marked", Box::new(|r| r.marked.to_string())),
        ("objects deleted", Box::new(|r| r.deleted.to_string())),
        (
            "bucket multi-deletes (requests / keys)",
            Box::new(|r| format!("{} / {}", r.bucket_calls.0, r.bucket_calls.1)),
        ),
        (
            "peak RSS of the collector process",
            Box::new(|r| mb(r.peaks.process_hwm_kb)),
        ),
        (
            "largest PostgreSQL backend: private memory / peak RSS",
            Box::new(|r| {
                format!(
                    "{} / {}",
                    mb(r.peaks.backend_anon_kb),
                    mb(r.peaks.backend_hwm_kb)
                )
            }),
        ),
        (
            "PostgreSQL temporary files",
            Box::new(|r| format!("{} ({} MB)", r.temp.0, r.temp.1 >> 20)),
        ),
        ("load average at start", Box::new(|r| r.load_before.clone())),
    ];
    println!();
    println!("| | Larder | niks3 |");
    println!("|---|---|---|");
    for (label, f) in &rows {
        println!("| {label} | {} | {} |", cell(larder, f), cell(niks3, f));
    }
    if let (Some(l), Some(n)) = (larder, niks3) {
        if !l.timed_out && !n.timed_out {
            let ratio = l.total.as_secs_f64() / n.total.as_secs_f64();
            let with_vacuum = n.total + n.vacuum.unwrap_or_default();
            println!();
            println!(
                "Larder / niks3: {ratio:.3} (target <= 0.2: {}); against niks3 with its VACUUM: {:.3}",
                verdict(ratio <= 0.2),
                l.total.as_secs_f64() / with_vacuum.as_secs_f64()
            );
        }
    }
    if let Some(l) = larder.filter(|l| !l.timed_out) {
        println!(
            "Larder under 60 s: {}; peak RSS under 300 MB: {}",
            verdict(l.total < Duration::from_secs(60)),
            verdict(l.peaks.process_hwm_kb < 300 * 1024)
        );
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
