//! Property tests of the index codec: random hash sets through shards and back.

// Helpers below are test code too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use larder_worker::index::compress::{compress, decompress};
use larder_worker::index::hash::{format_hash, parse_hash, Depth, Prefix};
use larder_worker::index::journal::{parse_segment, render_segment, Change, Op};
use larder_worker::index::reader::Shard;
use larder_worker::index::shard::ShardWriter;
use proptest::prelude::*;
use ruint::aliases::U160;

fn hash_strategy() -> impl Strategy<Value = U160> {
    any::<[u64; 3]>().prop_map(|l| U160::from_limbs([l[0], l[1], l[2] & 0xffff_ffff]))
}

fn encode(depth: Depth, items: &[U160]) -> Shard {
    let mut w = ShardWriter::new(depth, items.len() as u64);
    for s in items {
        w.push(*s).unwrap();
    }
    let raw = w.finish().unwrap();
    let z = compress(&raw).unwrap();
    let back = decompress(&z, raw.len()).unwrap();
    assert_eq!(back, raw);
    Shard::parse(back).unwrap()
}

/// Encodes the non-empty shards of `depth` for the set, through zstd, and parses them back;
/// every other prefix gets the (identical) empty shard.
fn build(depth: Depth, set: &BTreeSet<U160>) -> (BTreeMap<Prefix, Shard>, Shard) {
    let mut by_prefix: BTreeMap<Prefix, Vec<U160>> = BTreeMap::new();
    for &h in set {
        let (p, s) = depth.split(h);
        by_prefix.entry(p).or_default().push(s);
    }
    let shards = by_prefix
        .into_iter()
        .map(|(p, items)| (p, encode(depth, &items)))
        .collect();
    (shards, encode(depth, &[]))
}

fn check(depth: Depth, set: &BTreeSet<U160>, probes: &[U160]) -> Result<(), TestCaseError> {
    let (shards, empty) = build(depth, set);
    prop_assert_eq!(empty.iter().count(), 0);
    let mut decoded = Vec::with_capacity(set.len());
    for (&prefix, shard) in &shards {
        for s in shard.iter() {
            decoded.push(depth.join(prefix, s.unwrap()));
        }
    }
    prop_assert_eq!(decoded, set.iter().copied().collect::<Vec<_>>());
    let contains = |h: U160| {
        let (p, s) = depth.split(h);
        shards.get(&p).unwrap_or(&empty).contains(s).unwrap()
    };
    for &h in set {
        prop_assert!(contains(h), "member {} missing", format_hash(h));
    }
    for &h in probes {
        prop_assert_eq!(contains(h), set.contains(&h), "probe {}", format_hash(h));
        // Neighbours of members are the hardest non-members.
        for n in [
            h.wrapping_add(U160::from(1u8)),
            h.wrapping_sub(U160::from(1u8)),
        ] {
            prop_assert_eq!(contains(n), set.contains(&n));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn small_sets_round_trip(
        set in proptest::collection::btree_set(hash_strategy(), 0..1200),
        probes in proptest::collection::vec(hash_strategy(), 0..200),
        depth in 0u64..=3,
    ) {
        let depth = Depth::new(depth).unwrap();
        // Members' neighbours are probed too, via check().
        let mut probes = probes;
        probes.extend(set.iter().take(50).copied());
        check(depth, &set, &probes)?;
    }

    #[test]
    fn dense_sets_round_trip(
        base in hash_strategy(),
        offsets in proptest::collection::btree_set(0u64..5000, 0..3000),
        depth in 0u64..=2,
    ) {
        // Clustered hashes: tiny gaps and sparse-entry boundaries in one shard.
        let set: BTreeSet<U160> = offsets.iter().map(|&o| base.wrapping_add(U160::from(o))).collect();
        let probes: Vec<U160> = (0..5000u64).step_by(7).map(|o| base.wrapping_add(U160::from(o))).collect();
        check(Depth::new(depth).unwrap(), &set, &probes)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3))]

    #[test]
    fn large_sets_round_trip(
        seeds in proptest::collection::vec(hash_strategy(), 100_000),
        probes in proptest::collection::vec(hash_strategy(), 2_000),
        depth in 0u64..=3,
    ) {
        let set: BTreeSet<U160> = seeds.into_iter().collect();
        check(Depth::new(depth).unwrap(), &set, &probes)?;
    }
}

proptest! {
    #[test]
    fn hash_text_round_trips(h in hash_strategy()) {
        let s = format_hash(h);
        prop_assert_eq!(s.len(), 32);
        prop_assert_eq!(parse_hash(&s).unwrap(), h);
    }

    #[test]
    fn journal_round_trips(changes in proptest::collection::vec((any::<bool>(), hash_strategy()), 0..50)) {
        let changes: Vec<Change> = changes
            .into_iter()
            .map(|(add, hash)| Change { op: if add { Op::Add } else { Op::Remove }, hash })
            .collect();
        prop_assert_eq!(parse_segment(&render_segment(&changes)).unwrap(), changes);
    }
}
