//! Data-plane benchmarks of issue 3: they print numbers, they assert no timings.
//!
//! ```text
//! . e2e/tools/install-all.sh
//! cargo build --release --bin larder
//! cargo bench -p larder-e2e --bench data_plane [-- push pending read]
//! ```
//!
//! - `push`: a ~1 GiB closure (a few hundred paths, mixed sizes, mostly incompressible)
//!   pushed with `larder push` and with `niks3 push` to a release `larder serve` on
//!   PostgreSQL + Garage, a fresh database and bucket per push; then pushed again (all cached).
//! - `pending`: `POST /api/pending_closures` with 10,000 new objects, on Larder and on
//!   niks3-server (same PostgreSQL cluster and Garage, a database and bucket each).
//! - `read`: narinfo latency (first reads of distinct narinfos, and one narinfo read
//!   repeatedly, which the worker answers from memory) and 100 MiB NAR throughput through
//!   Larder's read proxy against plain GETs of presigned Garage URLs.
//!
//! Every service runs on this machine, so the numbers compare the software, not a network.
//! Tunables (environment): `LARDER_BENCH_PUSH_MIB` (closure size, 1024),
//! `LARDER_BENCH_PUSH_RUNS` (3), `LARDER_BENCH_PENDING_RUNS` (10),
//! `LARDER_BENCH_PENDING_OBJECTS` (10000), `LARDER_BENCH_NARINFO_GETS` (500),
//! `LARDER_BENCH_NAR_MIB` (100), `LARDER_BENCH_NAR_RUNS` (5).
#![allow(clippy::unwrap_used, clippy::expect_used)] // a failed benchmark step should panic

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use larder_e2e::cpu;
use larder_e2e::garage::{self, Bucket};
use larder_e2e::larder::{Backend, Worker};
use larder_e2e::niks3::{self, Niks3Server, S3Bucket};
use larder_e2e::nix::{Nix, PathSpec};
use larder_e2e::postgres;
use larder_e2e::process::run;
use serde_json::{json, Value};

const MIB: u64 = 1024 * 1024;
const NIX_BASE32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn main() {
    let selected: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |name: &str| selected.is_empty() || selected.iter().any(|s| s == name);
    let scratch = scratch_dir();
    ensure_release_worker();
    println!("# Larder data-plane benchmarks");
    println!(
        "larder: {}",
        std::env::var("LARDER_BIN").unwrap_or_default()
    );
    println!("scratch: {}", scratch.display());
    println!("cores: {}", cores());
    println!("load at start: {}", load());
    if wants("push") {
        bench_push();
    }
    if wants("pending") {
        bench_pending();
    }
    if wants("read") {
        bench_read();
    }
    println!("\nload at end: {}", load());
}

/// Points temporary files of this run (services' data, spools, Garage's blocks) at one
/// folder that a watchdog removes once the benchmark and its services are gone: a 1 GiB
/// closure pushed a few times would otherwise fill /tmp run after run.
fn scratch_dir() -> PathBuf {
    let base = std::env::temp_dir();
    let dir = base.join(format!("larder-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // The services start later and inherit it; nothing else runs yet.
    std::env::set_var("TMPDIR", &dir);
    let script = format!(
        "while kill -0 {} 2>/dev/null; do sleep 1; done; sleep 5; rm -rf '{}'",
        std::process::id(),
        dir.display()
    );
    // Never waited for: it must outlive this process (as the harness's own watchdogs do).
    let _ = Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    dir
}

/// Benchmarks run the optimised worker: `LARDER_BIN`, else the workspace's release build.
fn ensure_release_worker() {
    if std::env::var_os("LARDER_BIN").is_some() {
        return;
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("release/larder");
    assert!(
        bin.is_file(),
        "{} is missing: run `cargo build --release --bin larder` first",
        bin.display()
    );
    std::env::set_var("LARDER_BIN", &bin);
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1/5/15-minute load averages: other work on the machine skews every number.
fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A small deterministic generator (SplitMix64), so the closure is the same every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn uniform(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// Log-uniform between `lo` and `hi`: many small paths, a few big ones, as in real closures.
    fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let f = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (l, h) = ((lo as f64).ln(), (hi as f64).ln());
        (l + f * (h - l)).exp() as u64
    }
}

/// Random characters of the nix-base32 alphabet (store path hashes, NAR hashes).
fn random_base32(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    getrandom::fill(&mut bytes).unwrap();
    bytes
        .iter()
        .map(|b| NIX_BASE32[usize::from(*b) % 32] as char)
        .collect()
}

/// A random SHA-256 in nix-base32 (52 characters; 260 bits hold 256, so the first
/// character is 0 or 1).
fn random_sha256() -> String {
    let rest = random_base32(51);
    let first = if rest.as_bytes()[0].is_multiple_of(2) {
        '0'
    } else {
        '1'
    };
    format!("{first}{rest}")
}

/// Median and nearest-rank 95th percentile.
fn stats(samples: &[f64]) -> (f64, f64) {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    let rank = ((0.95 * s.len() as f64).ceil() as usize).clamp(1, s.len());
    (median, s[rank - 1])
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn fmt_list(v: &[f64], unit: &str) -> String {
    v.iter()
        .map(|x| format!("{x:.3}{unit}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn met(ok: bool) -> &'static str {
    if ok {
        "yes"
    } else {
        "NO"
    }
}

// ---------------------------------------------------------------------------------------
// 1. Push of a ~1 GiB closure
// ---------------------------------------------------------------------------------------

/// About `total_mib` MiB in ~300 paths: 4 big (100–180 MB), 30 medium (5–20 MB, many
/// above the 10 MiB multipart threshold), the rest small (1 KB–4 MB, log-uniform).
/// A quarter of each path's bytes is text, the rest random. Every path references the
/// one before it and up to three others, so the last path's closure is all of them.
fn push_specs(total_mib: u64) -> Vec<PathSpec> {
    let scale = total_mib as f64 / 1024.0;
    let scaled = |n: u64| ((n as f64 * scale) as u64).max(1);
    let mut rng = Rng(0x1a7d_e2b3);
    let mut sizes = Vec::new();
    for _ in 0..4 {
        sizes.push(scaled(rng.uniform(100_000_000, 180_000_000)));
    }
    for _ in 0..30 {
        sizes.push(scaled(rng.uniform(5_000_000, 20_000_000)));
    }
    for _ in 0..266 {
        sizes.push(scaled(rng.log_uniform(1_000, 4_000_000)));
    }
    // Big paths spread through the chain, as libraries and toolchains are in a real closure.
    for i in (1..sizes.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        sizes.swap(i, j);
    }
    sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| {
            let mut refs: Vec<usize> = Vec::new();
            if i > 0 {
                refs.push(i - 1);
                for _ in 0..rng.below(4) {
                    refs.push(rng.below(i as u64) as usize);
                }
            }
            refs.sort_unstable();
            refs.dedup();
            let text = size / 4;
            PathSpec::new(&format!("bench-path-{i}"), size - text, &refs).with_text(text)
        })
        .collect()
}

/// Reads every file under `path`, so both clients start with the closure in the page cache.
fn warm(path: &Path) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    if meta.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            warm(&entry.unwrap().path());
        }
    } else if meta.is_file() {
        std::io::copy(
            &mut std::fs::File::open(path).unwrap(),
            &mut std::io::sink(),
        )
        .unwrap();
    }
}

/// Every object in the bucket (key, size), all pages.
fn list_bucket(bucket: &Bucket) -> Vec<(String, u64)> {
    runtime()
        .block_on(bucket.list())
        .iter()
        .map(|o| {
            (
                o.key().unwrap_or_default().to_string(),
                o.size().unwrap_or_default() as u64,
            )
        })
        .collect()
}

/// Deletes every object in the bucket, so Garage's disk does not grow run after run.
fn empty_bucket(bucket: &Bucket) {
    let keys = list_bucket(bucket);
    runtime().block_on(async {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        let s3 = bucket.client();
        for chunk in keys.chunks(1000) {
            let ids = chunk
                .iter()
                .map(|(k, _)| ObjectIdentifier::builder().key(k).build().unwrap())
                .collect();
            let delete = Delete::builder().set_objects(Some(ids)).build().unwrap();
            s3.delete_objects()
                .bucket(&bucket.name)
                .delete(delete)
                .send()
                .await
                .unwrap();
        }
    });
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    Larder,
    Niks3,
}

impl Client {
    fn name(self) -> &'static str {
        match self {
            Client::Larder => "larder push",
            Client::Niks3 => "niks3 push",
        }
    }
}

/// One push command of `client` to `worker`, with the tests' Nix configuration.
fn push_command(client: Client, worker: &Worker, token_file: &Path, root: &str) -> Command {
    let nix = Nix::shared();
    let mut cmd = match client {
        Client::Larder => {
            let mut cmd = Command::new(larder_e2e::larder::larder_bin());
            cmd.args(["push", "--quiet", "--json", "--server", &worker.url])
                .arg("--token-file")
                .arg(token_file);
            cmd
        }
        Client::Niks3 => {
            let mut cmd = niks3::client_command(&worker.url, token_file);
            cmd.arg("push");
            cmd
        }
    };
    cmd.arg(root)
        .env("NIX_CONF_DIR", nix.conf_dir())
        .env("NIX_REMOTE", "local")
        .env_remove("LARDER_LOG");
    cmd
}

/// Times a command to its end; panics with its output if it fails.
fn timed(what: &str, mut cmd: Command) -> (Duration, String) {
    let start = Instant::now();
    let out = run(what, &mut cmd);
    (start.elapsed(), out)
}

struct PushRun {
    first: Duration,
    /// CPU seconds of every process of the first push: client, worker, Garage, PostgreSQL.
    first_cpu: f64,
    second: Duration,
    objects: usize,
    stored_bytes: u64,
}

/// A fresh database, bucket and worker; `client` pushes `root` twice.
fn push_once(client: Client, root: &str, expected_objects: usize) -> PushRun {
    let test = match client {
        Client::Larder => "bench-push-larder",
        Client::Niks3 => "bench-push-niks3",
    };
    let bucket = garage::bucket(test);
    let backend = Backend::Postgres {
        database: postgres::database(test),
        bucket: bucket.clone(),
    };
    let worker = Worker::start(test, backend, &[]);
    let token_file = worker.data_dir.join("push-token-file");
    std::fs::write(&token_file, &worker.token).unwrap();
    let cpu_before = cpu::seconds_by_command();
    let (first, out) = timed(
        client.name(),
        push_command(client, &worker, &token_file, root),
    );
    let cpu_after = cpu::seconds_by_command();
    let first_cpu = cpu::total_delta(&cpu_before, &cpu_after);
    eprintln!(
        "  {} first push CPU: {}",
        client.name(),
        cpu::delta(&cpu_before, &cpu_after)
    );
    if client == Client::Larder {
        eprintln!("  larder push summary: {}", out.trim());
    }
    let stored = list_bucket(&bucket);
    // narinfo, NAR and listing per path: anything less means a push skipped work.
    assert!(
        stored.len() >= expected_objects,
        "{}: {} objects in the bucket, expected at least {expected_objects}",
        client.name(),
        stored.len()
    );
    let cpu_before = cpu::seconds_by_command();
    let (second, _) = timed(
        client.name(),
        push_command(client, &worker, &token_file, root),
    );
    eprintln!(
        "  {} second push CPU: {}",
        client.name(),
        cpu::delta(&cpu_before, &cpu::seconds_by_command())
    );
    // The worker itself publishes binary cache index journal segments meanwhile.
    let after = list_bucket(&bucket);
    let new: Vec<&(String, u64)> = after
        .iter()
        .filter(|o| !stored.contains(o) && !o.0.starts_with("nix-cache-index/"))
        .collect();
    assert!(new.is_empty(), "the second push uploaded {new:?}");
    drop(worker);
    empty_bucket(&bucket);
    PushRun {
        first,
        first_cpu,
        second,
        objects: stored.len(),
        stored_bytes: stored.iter().map(|(_, s)| s).sum(),
    }
}

fn bench_push() {
    let total_mib = env_u64("LARDER_BENCH_PUSH_MIB", 1024);
    let runs = env_u64("LARDER_BENCH_PUSH_RUNS", 3).max(1);
    let specs = push_specs(total_mib);
    println!(
        "\n## push: {} paths, ~{total_mib} MiB, {runs} run(s)",
        specs.len()
    );
    let nix = Nix::shared();
    let start = Instant::now();
    // A fixed salt: a rerun reuses the paths built before instead of building 1 GiB again.
    let paths = nix.build_closure_salted(&format!("larder-bench-push-v1-{total_mib}"), &specs);
    let root = paths.last().unwrap().clone();
    eprintln!("  closure built in {:.1}s", start.elapsed().as_secs_f64());
    let infos = nix.path_info(std::slice::from_ref(&root));
    let nar_total: u64 = match &infos {
        Value::Array(list) => list.iter().filter_map(|i| i["narSize"].as_u64()).sum(),
        Value::Object(map) => map.values().filter_map(|i| i["narSize"].as_u64()).sum(),
        _ => 0,
    };
    let big = specs
        .iter()
        .filter(|s| s.size + s.text > 100_000_000)
        .count();
    let multipart = specs.iter().filter(|s| s.size + s.text > 10 * MIB).count();
    println!(
        "closure: {} paths, NAR total {:.1} MiB, {big} paths > 100 MB, {multipart} > 10 MiB",
        paths.len(),
        nar_total as f64 / MIB as f64
    );
    for p in &paths {
        warm(Path::new(p));
    }

    let mut results: Vec<(Client, PushRun)> = Vec::new();
    for run in 0..runs {
        // Alternate who goes first so neither always meets a warmer (or busier) machine.
        let order = if run % 2 == 0 {
            [Client::Larder, Client::Niks3]
        } else {
            [Client::Niks3, Client::Larder]
        };
        for client in order {
            let r = push_once(client, &root, paths.len() * 3);
            println!(
                "run {run}: {:<11} first {:>7.2}s  second {:>6.2}s  ({} objects, {:.1} MiB stored)  load {}",
                client.name(),
                secs(r.first),
                secs(r.second),
                r.objects,
                r.stored_bytes as f64 / MIB as f64,
                load()
            );
            results.push((client, r));
        }
    }
    let times = |client: Client, second: bool| -> Vec<f64> {
        results
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, r)| secs(if second { r.second } else { r.first }))
            .collect()
    };
    let (l1, n1) = (times(Client::Larder, false), times(Client::Niks3, false));
    let (l2, n2) = (times(Client::Larder, true), times(Client::Niks3, true));
    let (lm, _) = stats(&l1);
    let (nm, _) = stats(&n1);
    let (lm2, _) = stats(&l2);
    let (nm2, _) = stats(&n2);
    println!("larder first:  {}", fmt_list(&l1, "s"));
    println!("niks3 first:   {}", fmt_list(&n1, "s"));
    println!("larder second: {}", fmt_list(&l2, "s"));
    println!("niks3 second:  {}", fmt_list(&n2, "s"));
    println!("| push (median of {runs}) | larder push | niks3 push | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| first push, nothing cached | {lm:.2} s | {nm:.2} s | {:.2}× | ≤ 0.8× | {} |",
        lm / nm,
        met(lm / nm <= 0.8)
    );
    println!(
        "| second push, all cached | {lm2:.2} s | {nm2:.2} s | {:.2}× | — | — |",
        lm2 / nm2
    );
    println!(
        "throughput (NAR MiB/s): larder {:.0}, niks3 {:.0}",
        nar_total as f64 / MIB as f64 / lm,
        nar_total as f64 / MIB as f64 / nm
    );
    // What the push costs whatever the machine: on 2 vCPUs the wall time is bound by it.
    let per_gib = |client: Client| -> f64 {
        let cpu: Vec<f64> = results
            .iter()
            .filter(|(c, _)| *c == client)
            .map(|(_, r)| r.first_cpu)
            .collect();
        stats(&cpu).0 / (nar_total as f64 / (1024.0 * MIB as f64))
    };
    let (lc, nc) = (per_gib(Client::Larder), per_gib(Client::Niks3));
    println!(
        "CPU per GiB of NAR, first push, all processes (median): larder {lc:.2} s, niks3 {nc:.2} s ({:.2}×)",
        lc / nc
    );
}

// ---------------------------------------------------------------------------------------
// 2. POST /api/pending_closures with 10,000 objects
// ---------------------------------------------------------------------------------------

/// A closure of `objects` new objects (narinfo, NAR, listing and build log per path),
/// with fresh random keys. About 2% of the NARs are above the multipart threshold, as in
/// a typical system closure. With `file_hashes`, objects declare `file_hash`/`file_size`
/// the way `larder push` does.
fn pending_request(objects: usize, file_hashes: bool) -> Value {
    let paths = objects.div_ceil(4);
    let mut seed = [0u8; 8];
    getrandom::fill(&mut seed).unwrap();
    let mut rng = Rng(u64::from_le_bytes(seed));
    let hashes: Vec<String> = (0..paths).map(|_| random_base32(32)).collect();
    let mut list = Vec::with_capacity(objects);
    for (i, hash) in hashes.iter().enumerate() {
        let nar_size = if rng.below(50) == 0 {
            rng.uniform(12 * MIB, 200 * MIB)
        } else {
            rng.log_uniform(1_000, 8 * MIB)
        };
        let nar_key = format!("nar/{}.nar.zst", random_sha256());
        let mut refs = vec![nar_key.clone(), format!("{hash}.ls")];
        for _ in 0..rng.below(5) {
            if i > 0 {
                refs.push(format!("{}.narinfo", hashes[rng.below(i as u64) as usize]));
            }
        }
        refs.sort();
        refs.dedup();
        let file_fields = |size: u64| {
            if file_hashes {
                json!({"file_hash": format!("sha256:{}", random_sha256()), "file_size": size})
            } else {
                json!({})
            }
        };
        let mut nar = json!({"key": nar_key, "type": "nar", "refs": [], "nar_size": nar_size});
        let mut entries = vec![
            json!({"key": format!("{hash}.narinfo"), "type": "narinfo", "refs": refs}),
            json!({"key": format!("{hash}.ls"), "type": "listing", "refs": []}),
            json!({"key": format!("log/{}-bench-{i}.drv", random_base32(32)), "type": "build_log", "refs": []}),
        ];
        if let (Value::Object(n), Value::Object(extra)) = (&mut nar, file_fields(nar_size / 2)) {
            n.extend(extra);
        }
        entries.insert(1, nar);
        list.extend(entries);
    }
    list.truncate(objects);
    json!({
        "closure": format!("{}.narinfo", hashes[0]),
        "objects": list,
        "verify_s3": false,
    })
}

/// Sends one `POST /api/pending_closures`; returns the time to the whole answer and how
/// many objects it said to upload.
async fn post_pending(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    body: Vec<u8>,
) -> (Duration, usize) {
    let start = Instant::now();
    let response = http
        .post(format!("{url}/api/pending_closures"))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let elapsed = start.elapsed();
    assert!(
        status.is_success(),
        "{url}: {status}: {}",
        String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
    );
    let answer: Value = serde_json::from_slice(&bytes).unwrap();
    let pending = answer["pending_objects"]
        .as_object()
        .map_or(0, serde_json::Map::len);
    (elapsed, pending)
}

fn bench_pending() {
    let objects = env_u64("LARDER_BENCH_PENDING_OBJECTS", 10_000) as usize;
    let runs = env_u64("LARDER_BENCH_PENDING_RUNS", 10).max(1) as usize;
    println!("\n## pending: POST /api/pending_closures with {objects} new objects, {runs} runs");
    let test = "bench-pending-larder";
    let worker = Worker::start(
        test,
        Backend::Postgres {
            database: postgres::database(test),
            bucket: garage::bucket(test),
        },
        &[],
    );
    let nbucket = garage::bucket("bench-pending-niks3");
    let niks3 = Niks3Server::start(
        &postgres::database("bench-pending-niks3"),
        &S3Bucket {
            endpoint: nbucket.endpoint.clone(),
            region: nbucket.region.clone(),
            bucket: nbucket.name.clone(),
            access_key: nbucket.access_key.clone(),
            secret_key: nbucket.secret_key.clone(),
        },
        None,
    );
    let niks3_token = std::fs::read_to_string(niks3.token_file())
        .unwrap()
        .trim()
        .to_string();
    let rt = runtime();
    let http = reqwest::Client::new();
    let targets: [(&str, &str, &str, bool); 3] = [
        ("larder", &worker.url, &worker.token, false),
        ("larder+file_hash", &worker.url, &worker.token, true),
        ("niks3", niks3.url(), &niks3_token, false),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    rt.block_on(async {
        // One discarded round warms connections, pools and caches on every side.
        for run in 0..=runs {
            // Rotate who goes first.
            for k in 0..targets.len() {
                let t = (run + k) % targets.len();
                let (name, url, token, hashes) = targets[t];
                let body = serde_json::to_vec(&pending_request(objects, hashes)).unwrap();
                let (elapsed, pending) = post_pending(&http, url, token, body).await;
                assert_eq!(pending, objects, "{name}: every object is new");
                if run > 0 {
                    samples[t].push(elapsed.as_secs_f64() * 1000.0);
                }
            }
        }
    });
    for (t, (name, ..)) in targets.iter().enumerate() {
        println!("{name:<17} ms: {}", fmt_list(&samples[t], ""));
    }
    let (lm, lp) = stats(&samples[0]);
    let (hm, hp) = stats(&samples[1]);
    let (nm, np) = stats(&samples[2]);
    println!("| {objects} objects | median | p95 |");
    println!("|---|---|---|");
    println!("| Larder (niks3's request) | {lm:.0} ms | {lp:.0} ms |");
    println!("| Larder (with file_hash, as larder push sends) | {hm:.0} ms | {hp:.0} ms |");
    println!("| niks3-server | {nm:.0} ms | {np:.0} ms |");
    println!(
        "ratio (median) {:.2}× (target ≤ 0.5×: {}); Larder median < 300 ms: {}",
        lm / nm,
        met(lm / nm <= 0.5),
        met(lm < 300.0)
    );
    println!("load: {}", load());
}

// ---------------------------------------------------------------------------------------
// 3. Reads: the proxy against Garage
// ---------------------------------------------------------------------------------------

/// A narinfo as a push leaves it: zstd-compressed with `Content-Encoding: zstd`.
fn narinfo_text(hash: &str, nar_hash: &str) -> String {
    format!(
        "StorePath: /nix/store/{hash}-bench\nURL: nar/{nar_hash}.nar.zst\nCompression: zstd\n\
         FileHash: sha256:{}\nFileSize: 104857600\nNarHash: sha256:{}\nNarSize: 104857600\n\
         References: {hash}-bench\nSig: bench:{}\n",
        random_sha256(),
        random_sha256(),
        random_base32(86),
    )
}

/// The p50 and p95 rows of a latency comparison against the ≤ 1.2× target.
fn latency_rows(what: &str, proxy: &[f64], direct: &[f64]) {
    let (p50, p95) = stats(proxy);
    let (d50, d95) = stats(direct);
    for (q, p, d) in [("p50", p50, d50), ("p95", p95, d95)] {
        println!(
            "| {what} {q} | {p:.2} ms | {d:.2} ms | {:.2}× | ≤ 1.2× | {} |",
            p / d,
            met(p / d <= 1.2)
        );
    }
}

/// Stores a zstd-compressed narinfo for a random path, as a push would; returns its key.
async fn put_narinfo(bucket: &Bucket) -> String {
    let hash = random_base32(32);
    let text = narinfo_text(&hash, &random_sha256());
    let compressed = zstd::stream::encode_all(text.as_bytes(), 3).unwrap();
    let key = format!("{hash}.narinfo");
    put(bucket, &key, compressed, Some("zstd")).await;
    key
}

async fn put(bucket: &Bucket, key: &str, body: Vec<u8>, encoding: Option<&str>) {
    bucket
        .client()
        .put_object()
        .bucket(&bucket.name)
        .key(key)
        .set_content_encoding(encoding.map(str::to_string))
        .body(body.into())
        .send()
        .await
        .unwrap();
}

async fn presigned_get(bucket: &Bucket, key: &str) -> String {
    let config =
        aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(3600)).unwrap();
    bucket
        .client()
        .get_object()
        .bucket(&bucket.name)
        .key(key)
        .presigned(config)
        .await
        .unwrap()
        .uri()
        .to_string()
}

/// One GET read to the end; returns the time and the bytes received.
/// GETs the proxy's URL and the direct one, the proxy first in even rounds `i` and the
/// direct one first in odd ones (so neither side always pays for going first); returns
/// (time, bytes) of the proxy's GET, then of the direct one.
async fn get_both(
    i: usize,
    proxy: (&reqwest::Client, &str),
    direct: (&reqwest::Client, &str),
) -> [(Duration, u64); 2] {
    if i.is_multiple_of(2) {
        let p = get(proxy.0, proxy.1).await;
        [p, get(direct.0, direct.1).await]
    } else {
        let d = get(direct.0, direct.1).await;
        [get(proxy.0, proxy.1).await, d]
    }
}

async fn get(http: &reqwest::Client, url: &str) -> (Duration, u64) {
    let start = Instant::now();
    let mut response = http.get(url).send().await.unwrap();
    assert!(
        response.status().is_success(),
        "{url}: {}",
        response.status()
    );
    let mut n = 0u64;
    while let Some(chunk) = response.chunk().await.unwrap() {
        n += chunk.len() as u64;
    }
    (start.elapsed(), n)
}

fn bench_read() {
    let gets = env_u64("LARDER_BENCH_NARINFO_GETS", 500) as usize;
    let nar_mib = env_u64("LARDER_BENCH_NAR_MIB", 100);
    let nar_runs = env_u64("LARDER_BENCH_NAR_RUNS", 5).max(1) as usize;
    println!(
        "\n## read: {gets} narinfo GETs and {nar_runs} × {nar_mib} MiB NAR, proxy vs direct Garage"
    );
    let test = "bench-read";
    let bucket = garage::bucket(test);
    let worker = Worker::start(
        test,
        Backend::Postgres {
            database: postgres::database(test),
            bucket: bucket.clone(),
        },
        &[],
    );
    let rt = runtime();
    let nar_key = format!("nar/{}.nar.zst", random_sha256());
    // Distinct narinfos, each read once through each side: what a client's first look
    // at a path costs, before the worker has it in memory.
    let cold = gets.min(1000);
    let (narinfo_key, narinfo_direct, nar_direct, cold_keys) = rt.block_on(async {
        let narinfo_key = put_narinfo(&bucket).await;
        let mut cold_keys = Vec::new();
        for _ in 0..cold {
            let key = put_narinfo(&bucket).await;
            let direct = presigned_get(&bucket, &key).await;
            cold_keys.push((key, direct));
        }
        let mut nar = vec![0u8; (nar_mib * MIB) as usize];
        getrandom::fill(&mut nar).unwrap();
        put(&bucket, &nar_key, nar, None).await;
        (
            narinfo_key.clone(),
            presigned_get(&bucket, &narinfo_key).await,
            presigned_get(&bucket, &nar_key).await,
            cold_keys,
        )
    });
    let narinfo_proxy = format!("{}/{narinfo_key}", worker.url);
    let nar_proxy = format!("{}/{nar_key}", worker.url);

    // One keep-alive client per side, as Nix keeps its connections to a substituter.
    let (proxy_http, direct_http) = (reqwest::Client::new(), reqwest::Client::new());
    let (mut lat_proxy, mut lat_direct) = (Vec::new(), Vec::new());
    let (mut tp_proxy, mut tp_direct) = (Vec::new(), Vec::new());
    let (mut cold_proxy, mut cold_direct) = (Vec::new(), Vec::new());
    let (mut lat_head, mut head_cpu) = (Vec::new(), None);
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    // CPU of the worker and of Garage per phase: on 2 shared vCPUs latency and rate
    // depend on scheduling, CPU per request much less.
    let garage_pids = cpu::descendants_named("garage");
    let snapshot = || (cpu::on_cpu(worker.pid()), cpu::on_cpu_all(&garage_pids));
    let mut phases = Vec::new();
    rt.block_on(async {
        let start = snapshot();
        for (i, (key, direct)) in cold_keys.iter().enumerate() {
            let proxy = format!("{}/{key}", worker.url);
            let [(p, _), (d, _)] = get_both(i, (&proxy_http, &proxy), (&direct_http, direct)).await;
            cold_proxy.push(ms(p));
            cold_direct.push(ms(d));
        }
        let phase = |name, gets: usize, proxy_reads_garage, before| Phase {
            name,
            gets: gets as u32,
            proxy_reads_garage,
            before,
            after: snapshot(),
        };
        phases.push(phase("narinfo first read", cold, true, start));
        for i in 0..gets + 50 {
            let [(p, _), (d, _)] = get_both(
                i,
                (&proxy_http, &narinfo_proxy),
                (&direct_http, &narinfo_direct),
            )
            .await;
            // The first 50 of each only warm up.
            if i >= 50 {
                lat_proxy.push(ms(p));
                lat_direct.push(ms(d));
            }
        }
        let before = phases[0].after;
        phases.push(phase("narinfo repeated", gets + 50, false, before));
        for i in 0..=nar_runs {
            let both = get_both(i, (&proxy_http, &nar_proxy), (&direct_http, &nar_direct)).await;
            for (url, (_, n)) in [&nar_proxy, &nar_direct].into_iter().zip(both) {
                assert_eq!(n, nar_mib * MIB, "{url}: whole NAR");
            }
            if i > 0 {
                let mib_s = |(d, n): (Duration, u64)| n as f64 / MIB as f64 / d.as_secs_f64();
                tp_proxy.push(mib_s(both[0]));
                tp_direct.push(mib_s(both[1]));
            }
        }
        let before = phases[1].after;
        phases.push(phase("100 MiB NAR", nar_runs + 1, true, before));
        // HEADs reach the bucket as HEADs (a commit sends one per uploaded object).
        let before = snapshot();
        for _ in 0..gets {
            let started = Instant::now();
            let status = proxy_http.head(&nar_proxy).send().await.unwrap().status();
            assert_eq!(status, 200, "HEAD {nar_proxy}");
            lat_head.push(ms(started.elapsed()));
        }
        head_cpu = Some((before, snapshot()));
    });
    let (tpm, _) = stats(&tp_proxy);
    let (tdm, _) = stats(&tp_direct);
    println!("NAR proxy MiB/s:  {}", fmt_list(&tp_proxy, ""));
    println!("NAR direct MiB/s: {}", fmt_list(&tp_direct, ""));
    println!("| read | proxy | direct Garage | ratio | target | met |");
    println!("|---|---|---|---|---|---|");
    latency_rows("narinfo repeated", &lat_proxy, &lat_direct);
    latency_rows(
        &format!("narinfo first read ({cold} distinct)"),
        &cold_proxy,
        &cold_direct,
    );
    println!(
        "| {nar_mib} MiB NAR (median of {nar_runs}) | {tpm:.0} MiB/s | {tdm:.0} MiB/s | {:.2}× | ≥ 0.8× | {} |",
        tpm / tdm,
        met(tpm / tdm >= 0.8)
    );
    cpu_rows(&phases);
    if let Some((before, after)) = head_cpu {
        let per = |d: Duration| d.as_secs_f64() * 1e6 / gets as f64;
        println!(
            "HEAD of the NAR through the proxy ({gets}): p50 {:.2} ms; CPU per HEAD: worker {:.0} µs, Garage {:.0} µs",
            stats(&lat_head).0,
            per(after.0 - before.0),
            per(after.1 - before.1)
        );
    }
    println!("load: {}", load());
}

/// CPU (worker, Garage) at one moment of the read bench.
type Cpu = (Duration, Duration);

/// A series of the read bench and the CPU it cost.
struct Phase {
    name: &'static str,
    /// GETs on each side.
    gets: u32,
    /// Whether the proxied GETs reach Garage (not when the worker answers from memory).
    proxy_reads_garage: bool,
    before: Cpu,
    after: Cpu,
}

/// CPU per GET: the worker's for a proxied GET, Garage's for any GET that reaches it;
/// a proxied GET costs both (or the worker's alone when it answers from memory), a
/// direct one Garage's alone.
fn cpu_rows(phases: &[Phase]) {
    println!("| CPU per GET | worker | Garage | proxied / direct |");
    println!("|---|---|---|---|");
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for p in phases {
        let garage_gets = if p.proxy_reads_garage { 2 } else { 1 } * p.gets;
        let worker = us(p.after.0 - p.before.0) / f64::from(p.gets);
        let garage = us(p.after.1 - p.before.1) / f64::from(garage_gets);
        let proxied = worker + if p.proxy_reads_garage { garage } else { 0.0 };
        println!(
            "| {} | {worker:.0} µs | {garage:.0} µs | {:.2}× |",
            p.name,
            proxied / garage.max(1.0)
        );
    }
}
