//! Hashes in increasing order, cut into one group per shard prefix, empty ones included:
//! only the shard being filled is ever held.

use ruint::aliases::U160;

use super::BuildError;
use crate::index::hash::{format_hash, Depth, Prefix};

/// The suffixes of one shard, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// The shard.
    pub prefix: Prefix,
    /// Its items' suffixes, strictly increasing.
    pub suffixes: Vec<U160>,
}

/// Cuts a sorted stream of hashes into groups.
#[derive(Debug)]
pub struct Grouper {
    depth: Depth,
    /// The prefix value being filled; every lower one has been emitted.
    open: u32,
    suffixes: Vec<U160>,
    last: Option<U160>,
}

impl Grouper {
    /// A grouper for shards of `depth`.
    pub fn new(depth: Depth) -> Self {
        Grouper {
            depth,
            open: 0,
            suffixes: Vec::new(),
            last: None,
        }
    }

    /// Emits the open group and the empty ones up to (not including) `value`.
    fn close_until(&mut self, value: u32, out: &mut Vec<Group>) {
        while self.open < value {
            if let Some(prefix) = self.depth.prefix(self.open) {
                out.push(Group {
                    prefix,
                    suffixes: std::mem::take(&mut self.suffixes),
                });
            }
            self.open += 1;
        }
    }

    /// Adds the next hash, which must be larger than the previous one; returns the groups
    /// it completes.
    pub fn push(&mut self, hash: U160) -> Result<Vec<Group>, BuildError> {
        if let Some(last) = self.last.filter(|&l| hash <= l) {
            return Err(BuildError::NotSorted {
                previous: format_hash(last),
                next: format_hash(hash),
            });
        }
        self.last = Some(hash);
        let (prefix, suffix) = self.depth.split(hash);
        let mut out = Vec::new();
        self.close_until(prefix.value(), &mut out);
        self.suffixes.push(suffix);
        Ok(out)
    }

    /// Every group not emitted yet, through the last prefix.
    pub fn finish(mut self) -> Vec<Group> {
        let mut out = Vec::new();
        self.close_until(self.depth.shard_count(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::parse_hash;

    fn h(s: &str) -> U160 {
        parse_hash(s).unwrap_or_default()
    }

    fn names(groups: &[Group]) -> Vec<(String, usize)> {
        groups
            .iter()
            .map(|g| (g.prefix.name(), g.suffixes.len()))
            .collect()
    }

    #[test]
    fn every_prefix_gets_a_group_in_order() {
        let depth = Depth::new(1).unwrap_or_else(|_| unreachable!());
        let mut g = Grouper::new(depth);
        let mut all = Vec::new();
        for s in [
            "10000000000000000000000000000000",
            "10000000000000000000000000000001",
            "30000000000000000000000000000000",
        ] {
            all.extend(g.push(h(s)).unwrap_or_default());
        }
        assert_eq!(
            names(&all),
            vec![("0".into(), 0), ("1".into(), 2), ("2".into(), 0)]
        );
        all.extend(g.finish());
        assert_eq!(all.len(), 32);
        assert_eq!(names(&all)[3], ("3".into(), 1));
        assert_eq!(names(&all)[31], ("z".into(), 0));
        let one = &all[1];
        assert_eq!(
            depth.join(one.prefix, one.suffixes[1]),
            h("10000000000000000000000000000001")
        );
    }

    #[test]
    fn nothing_still_makes_every_shard() {
        let g = Grouper::new(Depth::new(2).unwrap_or_else(|_| unreachable!()));
        let all = g.finish();
        assert_eq!(all.len(), 1024);
        assert!(all.iter().all(|g| g.suffixes.is_empty()));
        let root = Grouper::new(Depth::new(0).unwrap_or_else(|_| unreachable!())).finish();
        assert_eq!(names(&root), vec![("root".into(), 0)]);
    }

    #[test]
    fn out_of_order_or_repeated_hashes_are_refused() {
        let mut g = Grouper::new(Depth::new(1).unwrap_or_else(|_| unreachable!()));
        assert!(g.push(h("20000000000000000000000000000000")).is_ok());
        assert!(matches!(
            g.push(h("20000000000000000000000000000000")),
            Err(BuildError::NotSorted { .. })
        ));
        assert!(g.push(h("10000000000000000000000000000000")).is_err());
    }
}
