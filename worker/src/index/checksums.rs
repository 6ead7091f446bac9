//! `deltas/checksums/<epoch>.json`: XXH64 of every decompressed shard of an epoch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;
use xxhash_rust::xxh64::xxh64;

use super::hash::Prefix;

/// The only algorithm the format names.
pub const ALGORITHM: &str = "xxh64";

/// Why a checksums file is not valid.
#[derive(Debug, Error)]
pub enum ChecksumsError {
    #[error("checksums JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("checksum algorithm {0:?} is not xxh64")]
    Algorithm(String),
    #[error("epoch 0 is not an epoch")]
    Epoch,
    #[error("shard prefix {0:?} is not valid or not all prefixes have one depth")]
    Prefix(String),
    #[error("checksum {0:?} is not 16 lower-case hex digits")]
    Checksum(String),
}

/// Facts about one shard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardChecksum {
    /// XXH64 (seed 0) of the decompressed shard, 16 lower-case hex digits.
    pub checksum: String,
    /// Items in the shard.
    pub item_count: u64,
    /// Size of the decompressed shard in bytes.
    pub size_bytes: u64,
}

impl ShardChecksum {
    /// The entry for a decompressed shard holding `item_count` items.
    pub fn of(decompressed: &[u8], item_count: u64) -> Self {
        ShardChecksum {
            checksum: format!("{:016x}", xxh64(decompressed, 0)),
            item_count,
            size_bytes: decompressed.len() as u64,
        }
    }

    /// Whether a decompressed shard matches this entry.
    pub fn matches(&self, decompressed: &[u8]) -> bool {
        self.checksum == format!("{:016x}", xxh64(decompressed, 0))
            && self.size_bytes == decompressed.len() as u64
    }
}

/// The checksums of one epoch's shards, keyed by prefix name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksums {
    /// The epoch these shards belong to.
    pub epoch: u64,
    /// Always `xxh64`.
    pub algorithm: String,
    /// Prefix name (`root` at depth 0) to its shard's facts.
    pub shards: BTreeMap<String, ShardChecksum>,
}

impl Checksums {
    /// An empty set for an epoch.
    pub fn new(epoch: u64) -> Self {
        Checksums {
            epoch,
            algorithm: ALGORITHM.to_owned(),
            shards: BTreeMap::new(),
        }
    }

    /// Records a shard.
    pub fn insert(&mut self, prefix: Prefix, entry: ShardChecksum) {
        self.shards.insert(prefix.name(), entry);
    }

    /// Renders the JSON file.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Parses and checks a checksums file.
    pub fn parse(text: &str) -> Result<Self, ChecksumsError> {
        let c: Checksums = serde_json::from_str(text)?;
        if c.algorithm != ALGORITHM {
            return Err(ChecksumsError::Algorithm(c.algorithm));
        }
        if c.epoch == 0 {
            return Err(ChecksumsError::Epoch);
        }
        let mut depth = None;
        for (name, entry) in &c.shards {
            let p = Prefix::parse(name).map_err(|_| ChecksumsError::Prefix(name.clone()))?;
            if *depth.get_or_insert(p.depth()) != p.depth() {
                return Err(ChecksumsError::Prefix(name.clone()));
            }
            let hex = entry.checksum.as_bytes();
            if hex.len() != 16 || !hex.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                return Err(ChecksumsError::Checksum(entry.checksum.clone()));
            }
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_matches() {
        let mut c = Checksums::new(42);
        let shard = b"NIXIDX01 pretend shard";
        c.insert(Prefix::parse("b6").unwrap(), ShardChecksum::of(shard, 3));
        let json = c.to_json();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["epoch"], 42);
        assert_eq!(v["algorithm"], "xxh64");
        assert_eq!(v["shards"]["b6"]["item_count"], 3);
        assert_eq!(v["shards"]["b6"]["size_bytes"], shard.len());
        assert_eq!(
            v["shards"]["b6"]["checksum"],
            format!("{:016x}", xxh64(shard, 0))
        );
        let back = Checksums::parse(&json).unwrap();
        assert_eq!(back, c);
        assert!(back.shards["b6"].matches(shard));
        assert!(!back.shards["b6"].matches(b"other"));
    }

    #[test]
    fn rejects_bad_files() {
        let ok = r#"{"epoch":1,"algorithm":"xxh64","shards":{"root":{"checksum":"0123456789abcdef","item_count":0,"size_bytes":64}}}"#;
        assert!(Checksums::parse(ok).is_ok());
        for bad in [
            ok.replace("xxh64", "sha256"),
            ok.replace("\"epoch\":1", "\"epoch\":0"),
            ok.replace("root", "../x"),
            ok.replace("0123456789abcdef", "0123456789ABCDEF"),
            ok.replace("0123456789abcdef", "0123"),
            ok.replace("\"item_count\":0", "\"item_count\":-1"),
            ok.replace("\"root\"", "\"b6\":{\"checksum\":\"0123456789abcdef\",\"item_count\":0,\"size_bytes\":64},\"b\""),
            "{".to_string(),
            "[]".to_string(),
        ] {
            assert!(Checksums::parse(&bad).is_err(), "{bad}");
        }
    }
}
