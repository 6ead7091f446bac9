//! Index codec benchmarks: shard build throughput, lookup time, size against the bound.
//!
//! `cargo bench -p larder-worker --bench index` prints the size report first, then
//! criterion's timings.

// A benchmark that meets a broken invariant should stop loudly.
#![allow(clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use larder_worker::index::compress::compress;
use larder_worker::index::hash::{Depth, Prefix};
use larder_worker::index::reader::Shard;
use larder_worker::index::shard::ShardWriter;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ruint::aliases::U160;

const N: usize = 1_000_000;

fn random_hashes(seed: u64, n: usize) -> Vec<U160> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut v: Vec<U160> = (0..n)
        .map(|_| U160::from_limbs([rng.random(), rng.random(), rng.random::<u32>() as u64]))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Every shard of `depth` for sorted hashes, streamed through one writer per prefix.
fn build_all(depth: Depth, sorted: &[U160]) -> BTreeMap<Prefix, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut rest = sorted;
    for prefix in depth.prefixes() {
        let n = rest.partition_point(|&h| Prefix::of(depth, h) == prefix);
        let (mine, tail) = rest.split_at(n);
        let mut w = ShardWriter::new(depth, n as u64);
        for &h in mine {
            w.push(depth.split(h).1).expect("sorted unique input");
        }
        out.insert(prefix, w.finish().expect("count matches"));
        rest = tail;
    }
    out
}

/// log2 of C(2^160, n): n·160 − log2(n!) up to a term below 2^-100 for n ≤ 2^30.
fn exact_set_bound_bits(n: usize) -> f64 {
    let log2_fact: f64 = (1..=n).map(|i| (i as f64).log2()).sum();
    n as f64 * 160.0 - log2_fact
}

fn size_report(sorted: &[U160]) {
    let n = sorted.len();
    let bound = exact_set_bound_bits(n) / 8.0;
    println!("index size for n = {n} random hashes (exact-set bound {bound:.0} bytes):");
    for d in [0u64, 1, 2, 3] {
        let depth = Depth::new(d).expect("depth in range");
        let shards = build_all(depth, sorted);
        let raw: usize = shards.values().map(Vec::len).sum();
        let zst: usize = shards
            .values()
            .map(|s| compress(s).expect("zstd").len())
            .sum();
        let marker = if depth == Depth::for_item_count(n as u64) {
            " (recommended depth)"
        } else {
            ""
        };
        println!(
            "  depth {d}: {} shards, {raw} bytes decompressed ({:.4}x bound, {:.2} bits/item), {zst} bytes zstd ({:.4}x){marker}",
            shards.len(),
            raw as f64 / bound,
            raw as f64 * 8.0 / n as f64,
            zst as f64 / bound,
        );
    }
}

/// CPU time this thread has run, in ns (Linux schedstat), so numbers on a loaded
/// machine are not inflated by waiting for a core.
fn thread_cpu_ns() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    s.split_whitespace().next()?.parse().ok()
}

/// Mean wall and CPU time per lookup over many probes.
fn lookup_report(name: &str, depth: Depth, shards: &BTreeMap<Prefix, Shard>, probes: &[U160]) {
    let rounds = 50;
    let wall = std::time::Instant::now();
    let cpu = thread_cpu_ns();
    let mut hits = 0usize;
    for _ in 0..rounds {
        for &h in probes {
            let (p, s) = depth.split(h);
            hits += usize::from(shards[&p].contains(black_box(s)).expect("valid shard"));
        }
    }
    let n = (rounds * probes.len()) as f64;
    let wall_ns = wall.elapsed().as_nanos() as f64 / n;
    let cpu_ns = match (cpu, thread_cpu_ns()) {
        (Some(a), Some(b)) => format!("{:.2} µs CPU", (b - a) as f64 / n / 1000.0),
        _ => "CPU time unavailable".to_owned(),
    };
    println!(
        "  lookup depth {} {name}: {:.2} µs wall, {cpu_ns} per lookup ({hits} hits)",
        depth.get(),
        wall_ns / 1000.0
    );
}

fn benches(c: &mut Criterion) {
    let sorted = random_hashes(195, N);
    size_report(&sorted);

    let mut g = c.benchmark_group("shard_build");
    g.sample_size(10);
    g.throughput(Throughput::Elements(sorted.len() as u64));
    for d in [0u64, 2] {
        let depth = Depth::new(d).expect("depth in range");
        g.bench_function(format!("1M_hashes_depth_{d}"), |b| {
            b.iter(|| build_all(depth, black_box(&sorted)))
        });
    }
    g.finish();

    let mut g = c.benchmark_group("lookup");
    let probes_absent = random_hashes(7, 4096);
    for d in [0u64, 2] {
        let depth = Depth::new(d).expect("depth in range");
        let shards: BTreeMap<Prefix, Shard> = build_all(depth, &sorted)
            .into_iter()
            .map(|(p, raw)| (p, Shard::parse(raw).expect("valid shard")))
            .collect();
        let present: Vec<U160> = sorted.iter().step_by(N / 4096).copied().collect();
        lookup_report("present", depth, &shards, &present);
        lookup_report("absent", depth, &shards, &probes_absent);
        for (name, probes) in [("present", &present), ("absent", &probes_absent)] {
            let mut i = 0usize;
            g.bench_function(format!("depth_{d}_{name}"), |b| {
                b.iter_batched(
                    || {
                        i = (i + 1) % probes.len();
                        depth.split(probes[i])
                    },
                    |(p, s)| shards[&p].contains(black_box(s)).expect("valid shard"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(index, benches);
criterion_main!(index);
