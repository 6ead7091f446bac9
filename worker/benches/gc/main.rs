//! Garbage collection at scale: Larder's collector against niks3-server's, on the same
//! synthetic cache (see `dataset.rs`) loaded into each one's PostgreSQL schema.
//!
//! `cargo bench -p larder-worker --bench gc` (after `. e2e/tools/install-all.sh`)
//! prints the dataset, both runs and the targets. It is not a test: `cargo test` never
//! runs it. Environment:
//! - `LARDER_BENCH_PATHS` store paths (default 1000000; 100000 for a quick run);
//! - `LARDER_BENCH_SEED` (default 1);
//! - `LARDER_BENCH_ONLY` `larder` or `niks3` to run one collector;
//! - `LARDER_BENCH_BIN` (or `LARDER_BIN`) the `larder` binary to run (default: the one
//!   cargo built with this benchmark);
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

mod cluster;
mod dataset;
mod larder;
mod load;
mod niks3;
mod probe;
mod report;
mod stub_s3;

use std::time::{Duration, Instant};

use sqlx::{Connection, PgConnection, Row};

use cluster::Cluster;
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
        Some(larder::bench_larder(&pg, &ds, &stub, timeout).await)
    } else {
        None
    };
    let niks3 = if only.is_empty() || only == "niks3" {
        Some(niks3::bench_niks3(&pg, &ds, &stub, timeout).await)
    } else {
        None
    };
    report::report(larder.as_ref(), niks3.as_ref());
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
