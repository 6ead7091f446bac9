//! Hostile input for every index decoder: errors, never panics or hangs.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::time::{Duration, Instant};

use larder_worker::index::bloom::BloomFilter;
use larder_worker::index::checksums::Checksums;
use larder_worker::index::compress::{compress, decompress};
use larder_worker::index::delta::parse_delta;
use larder_worker::index::hash::{parse_hash, Depth, Prefix};
use larder_worker::index::header::ShardHeader;
use larder_worker::index::journal::parse_segment;
use larder_worker::index::manifest::Manifest;
use larder_worker::index::paths::IndexFile;
use larder_worker::index::reader::Shard;
use larder_worker::index::shard::{encode_shard, ShardWriter};
use proptest::prelude::*;
use ruint::aliases::U160;
use xxhash_rust::xxh64::xxh64;

/// Exercises a shard fully: parse, every lookup path, full iteration.
fn poke_shard(bytes: Vec<u8>) {
    let _ = ShardHeader::parse(&bytes);
    if let Ok(s) = Shard::parse(bytes) {
        for v in [0u64, 1, 11, 12, 255, 256, 257, 1 << 40] {
            let _ = s.contains(U160::from(v));
        }
        let _ = s.contains(U160::MAX);
        let _ = s.validate();
    }
}

/// A header claiming `n` items with a valid checksum over `data`.
fn forged(n: u64, k: u8, suffix_bits: u8, sparse: &[u8], data: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..8].copy_from_slice(b"NIXIDX01");
    f[8..16].copy_from_slice(&n.to_le_bytes());
    f[16] = k;
    f[17] = suffix_bits;
    f[18..26].copy_from_slice(&64u64.to_le_bytes());
    f[26..34].copy_from_slice(&n.div_ceil(256).to_le_bytes());
    f[34..42].copy_from_slice(&xxh64(data, 0).to_le_bytes());
    f.extend_from_slice(sparse);
    f.extend_from_slice(data);
    f
}

fn sparse_entry(suffix: u64, offset: u64) -> Vec<u8> {
    let mut e = vec![0u8; 12];
    e.extend_from_slice(&suffix.to_be_bytes());
    e.extend_from_slice(&offset.to_le_bytes());
    e
}

#[test]
fn huge_unary_runs_fail_fast() {
    // Item 0 = 0, then 16 MiB of one bits at k = 0: the cap or the end stops the reader.
    let mut data = vec![0u8; 20];
    data.extend(std::iter::repeat_n(0xffu8, 16 << 20));
    let f = forged(2, 0, 160, &sparse_entry(0, 20), &data);
    let start = Instant::now();
    let s = Shard::parse(f).unwrap();
    assert!(s.contains(U160::from(5u8)).is_err());
    assert!(s.validate().is_err());
    assert!(start.elapsed() < Duration::from_secs(20));
}

#[test]
fn counts_that_lie_are_errors() {
    let good = encode_shard(Depth::new(0).unwrap(), &[U160::from(1u8), U160::from(9u8)]).unwrap();
    // More items than the data holds (the sparse count still matches: ⌈200/256⌉ = 1).
    let mut f = good.clone();
    f[8..16].copy_from_slice(&200u64.to_le_bytes());
    let s = Shard::parse(f).unwrap();
    assert!(s.validate().is_err());
    assert!(s.contains(U160::from(100u8)).is_err());
    let data = &good[92..];
    // A sparse count the bytes cannot hold.
    let f = forged(u64::MAX, 0, 160, &[], &[]);
    assert!(Shard::parse(f).is_err());
    // Fewer items than the data holds: trailing bytes.
    let s = Shard::parse(forged(1, good[16], 160, &good[64..92], data)).unwrap();
    assert!(s.validate().is_err());
}

#[test]
fn zstd_bombs_error_instead_of_allocating() {
    let bomb = compress(&vec![0u8; 512 << 20]).unwrap();
    assert!(bomb.len() < 1 << 20);
    assert!(decompress(&bomb, 16 << 20).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn random_bytes_to_binary_decoders(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        poke_shard(bytes.clone());
        let _ = decompress(&bytes, 1 << 20);
        if let Ok(f) = BloomFilter::parse(&bytes) {
            let _ = f.contains(U160::from(7u8));
        }
    }

    #[test]
    fn random_headers_with_valid_magic(rest in proptest::collection::vec(any::<u8>(), 56..400)) {
        let mut bytes = b"NIXIDX01".to_vec();
        bytes.extend_from_slice(&rest);
        poke_shard(bytes.clone());
        let mut bloom = b"NixBloom".to_vec();
        bloom.extend_from_slice(&rest);
        let _ = BloomFilter::parse(&bloom);
    }

    #[test]
    fn mutated_valid_shards(
        items in proptest::collection::btree_set(0u64..100_000, 1..700),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        reseal in any::<bool>(),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let suffixes: Vec<U160> = items.iter().map(|&v| U160::from(v)).collect();
        let mut f = encode_shard(Depth::new(1).unwrap(), &suffixes).unwrap();
        for (at, x) in flips {
            let i = at.index(f.len());
            f[i] ^= x;
        }
        if let Some(c) = cut {
            let n = c.index(f.len());
            f.truncate(n);
        }
        if reseal && f.len() >= 64 {
            if let Ok(h) = ShardHeader::parse(&f) {
                if let Some(start) = h.data_offset().filter(|&o| o <= f.len()) {
                    let sum = xxh64(&f[start..], 0);
                    f[34..42].copy_from_slice(&sum.to_le_bytes());
                }
            }
        }
        poke_shard(f);
    }

    #[test]
    fn random_text_to_text_decoders(text in ".{0,300}", bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let lossy = String::from_utf8_lossy(&bytes).into_owned();
        for t in [&text, &lossy] {
            let _ = parse_segment(t);
            let _ = parse_delta(t);
            let _ = Manifest::from_cache_info(t);
            let _ = Manifest::from_json(t);
            let _ = Checksums::parse(t);
            let _ = IndexFile::parse_request(t);
            let _ = parse_hash(t);
            let _ = Prefix::parse(t);
        }
    }

    #[test]
    fn journal_like_text(lines in proptest::collection::vec("[-+#]?[0-9a-z]{30,34}", 0..20)) {
        let text = lines.join("\n");
        let _ = parse_segment(&text);
        let _ = parse_delta(&text);
        let _ = Manifest::from_cache_info(&text);
    }

    #[test]
    fn cache_info_like_text(lines in proptest::collection::vec("Index[A-Za-z]{0,30}: ?[ -~]{0,40}", 0..25)) {
        let _ = Manifest::from_cache_info(&lines.join("\n"));
    }
}

#[test]
fn writer_output_is_the_readers_input() {
    // Sanity for the forging helpers above: a forged copy of a real shard parses the same.
    let items: Vec<U160> = (0..300u64).map(|i| U160::from(i * 3)).collect();
    let real = encode_shard(Depth::new(0).unwrap(), &items).unwrap();
    let sparse_len = 28 * 2;
    let copy = forged(
        300,
        real[16],
        160,
        &real[64..64 + sparse_len],
        &real[64 + sparse_len..],
    );
    assert_eq!(copy, real);
    let mut w = ShardWriter::new(Depth::new(0).unwrap(), 0);
    assert!(w.push(U160::ZERO).is_err());
}
