//! Store-path hash parts as 160-bit integers, and sharding by their leading characters.

use std::fmt;

use ruint::aliases::U160;
use thiserror::Error;

use crate::nix::base32::{self, char_value, ALPHABET};

/// Characters in a store path's hash part.
pub const HASH_CHARS: usize = 32;
/// Bits in a hash part (5 per character).
pub const HASH_BITS: u32 = 160;
/// Deepest sharding the format allows.
pub const MAX_DEPTH: u8 = 4;

/// Why a hash part, depth or prefix is not valid.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("hash part has {0} characters, not 32")]
    Length(usize),
    #[error("hash part has {ch:?} at position {pos}, outside the nix-base32 alphabet")]
    Char { ch: char, pos: usize },
    #[error("sharding depth {0} is not in 0..=4")]
    Depth(u64),
    #[error("shard prefix {0:?} is not 1 to 4 nix-base32 characters or \"root\"")]
    Prefix(String),
    #[error("value does not fit in {0} bits")]
    Range(u32),
}

/// Reads a 32-character hash part as H: first character most significant, 5 bits each.
pub fn parse_hash(s: &str) -> Result<U160, HashError> {
    let bytes = s.as_bytes();
    if bytes.len() != HASH_CHARS {
        return Err(HashError::Length(s.chars().count()));
    }
    // Two u128 halves of 80 bits each keep this loop on native integers.
    let mut hi: u128 = 0;
    let mut lo: u128 = 0;
    for (pos, &c) in bytes.iter().enumerate() {
        let v = char_value(c).ok_or(HashError::Char {
            ch: s[pos..].chars().next().unwrap_or('?'),
            pos,
        })? as u128;
        if pos < 16 {
            hi = (hi << 5) | v;
        } else {
            lo = (lo << 5) | v;
        }
    }
    Ok((U160::from(hi) << 80) | U160::from(lo))
}

/// Renders H back as its 32-character hash part.
pub fn format_hash(h: U160) -> String {
    let mut out = [0u8; HASH_CHARS];
    let mut v = h;
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v.as_limbs()[0] & 31) as usize];
        v >>= 5;
    }
    // Every byte comes from ALPHABET, which is ASCII.
    out.iter().map(|&b| b as char).collect()
}

/// H as 20 bytes, big-endian (the sparse-index representation).
pub fn to_be_bytes(h: U160) -> [u8; 20] {
    h.to_be_bytes::<20>()
}

/// H from 20 big-endian bytes.
pub fn from_be_bytes(b: [u8; 20]) -> U160 {
    U160::from_be_bytes::<20>(b)
}

/// Nix's 20-byte digest of a hash part (what the Bloom filter hashes): H reversed.
pub fn nix_digest(s: &str) -> Result<[u8; 20], HashError> {
    // Validate with our own parser first so errors name the position.
    parse_hash(s)?;
    let v = base32::decode(s).map_err(|_| HashError::Length(s.len()))?;
    let mut out = [0u8; 20];
    out.copy_from_slice(&v);
    Ok(out)
}

/// Nix's 20-byte digest from H, without going through the string.
pub fn digest_of(h: U160) -> [u8; 20] {
    h.to_le_bytes::<20>()
}

/// How many leading characters choose a shard (0..=4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Depth(u8);

impl Depth {
    /// A depth, if it is in 0..=4.
    pub fn new(d: u64) -> Result<Self, HashError> {
        if d <= MAX_DEPTH as u64 {
            Ok(Depth(d as u8))
        } else {
            Err(HashError::Depth(d))
        }
    }

    /// The depth the format recommends for `n` items.
    pub fn for_item_count(n: u64) -> Self {
        Depth(match n {
            0..1_000 => 0,
            1_000..100_000 => 1,
            100_000..10_000_000 => 2,
            10_000_000..1_000_000_000 => 3,
            _ => 4,
        })
    }

    /// The depth as a number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Bits the prefix takes from H.
    pub fn prefix_bits(self) -> u32 {
        5 * self.0 as u32
    }

    /// Bits left for the suffix stored in a shard.
    pub fn suffix_bits(self) -> u32 {
        HASH_BITS - self.prefix_bits()
    }

    /// Number of shards (32^depth).
    pub fn shard_count(self) -> u32 {
        1 << self.prefix_bits()
    }

    /// Splits H into its shard prefix and the suffix stored in that shard.
    pub fn split(self, h: U160) -> (Prefix, U160) {
        let sb = self.suffix_bits() as usize;
        let value = if self.0 == 0 {
            0
        } else {
            (h >> sb).as_limbs()[0] as u32
        };
        (
            Prefix { depth: self, value },
            h & suffix_mask(self.suffix_bits()),
        )
    }

    /// Joins a prefix and a suffix back into H.
    pub fn join(self, prefix: Prefix, suffix: U160) -> U160 {
        if self.0 == 0 {
            suffix
        } else {
            (U160::from(prefix.value) << self.suffix_bits() as usize) | suffix
        }
    }

    /// The prefix numbered `value` (its characters' 5-bit values), if it exists at this depth.
    pub fn prefix(self, value: u32) -> Option<Prefix> {
        (value < self.shard_count()).then_some(Prefix { depth: self, value })
    }

    /// Every prefix of this depth, in order.
    pub fn prefixes(self) -> impl Iterator<Item = Prefix> {
        (0..self.shard_count()).map(move |value| Prefix { depth: self, value })
    }
}

impl fmt::Display for Depth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The all-ones value of `bits` bits (bits ≤ 160).
pub fn suffix_mask(bits: u32) -> U160 {
    if bits >= HASH_BITS {
        U160::MAX
    } else {
        (U160::from(1u8) << bits as usize) - U160::from(1u8)
    }
}

/// A shard: the first `depth` characters of the hashes it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Prefix {
    depth: Depth,
    value: u32,
}

impl Prefix {
    /// The prefix of a hash part at a depth.
    pub fn of(depth: Depth, h: U160) -> Self {
        depth.split(h).0
    }

    /// Parses a file stem: `root` for depth 0, else 1 to 4 alphabet characters.
    pub fn parse(s: &str) -> Result<Self, HashError> {
        if s == "root" {
            return Ok(Prefix {
                depth: Depth(0),
                value: 0,
            });
        }
        let bad = || HashError::Prefix(s.chars().take(16).collect());
        if s.is_empty() || s.len() > MAX_DEPTH as usize {
            return Err(bad());
        }
        let mut value = 0u32;
        for c in s.bytes() {
            value = (value << 5) | char_value(c).ok_or_else(bad)? as u32;
        }
        Ok(Prefix {
            depth: Depth(s.len() as u8),
            value,
        })
    }

    /// The depth this prefix belongs to.
    pub fn depth(self) -> Depth {
        self.depth
    }

    /// The prefix as a number (its characters' 5-bit values).
    pub fn value(self) -> u32 {
        self.value
    }

    /// The name used in object keys: the characters, or `root` at depth 0.
    pub fn name(self) -> String {
        if self.depth.0 == 0 {
            return "root".to_owned();
        }
        (0..self.depth.0)
            .rev()
            .map(|i| ALPHABET[((self.value >> (5 * i as u32)) & 31) as usize] as char)
            .collect()
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pow2(n: usize) -> U160 {
        U160::from(1u8) << n
    }

    #[test]
    fn vectors_from_the_format_page() {
        assert_eq!(
            parse_hash("00000000000000000000000000000001").unwrap(),
            U160::from(1u8)
        );
        assert_eq!(
            parse_hash("10000000000000000000000000000000").unwrap(),
            pow2(155)
        );
        assert_eq!(
            parse_hash("g0000000000000000000000000000000").unwrap(),
            U160::from(15u8) * pow2(155)
        );
        assert_eq!(parse_hash(&"z".repeat(32)).unwrap(), U160::MAX);
        let h = parse_hash("b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi").unwrap();
        assert_eq!(
            to_be_bytes(h),
            [
                0x59, 0x9F, 0xBF, 0xCB, 0xCB, 0x15, 0xDE, 0x09, 0xC9, 0xDC, 0xB1, 0x94, 0x6A, 0x52,
                0x43, 0x98, 0x57, 0x83, 0x37, 0x91
            ]
        );
    }

    #[test]
    fn nix_digest_is_h_reversed() {
        let s = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
        let h = parse_hash(s).unwrap();
        let mut be = to_be_bytes(h);
        be.reverse();
        assert_eq!(nix_digest(s).unwrap(), be);
        assert_eq!(digest_of(h), be);
        assert_eq!(base32::encode(&be), s);
    }

    #[test]
    fn rejects_bad_hash_parts() {
        assert_eq!(parse_hash("").unwrap_err(), HashError::Length(0));
        assert_eq!(
            parse_hash(&"0".repeat(31)).unwrap_err(),
            HashError::Length(31)
        );
        assert_eq!(
            parse_hash(&"0".repeat(33)).unwrap_err(),
            HashError::Length(33)
        );
        for bad in ['e', 'o', 't', 'u', 'A', '-', '/'] {
            let s = format!("{}{bad}", "0".repeat(31));
            assert_eq!(
                parse_hash(&s).unwrap_err(),
                HashError::Char { ch: bad, pos: 31 },
                "{s}"
            );
        }
        // A multi-byte character must not make the length check or slicing panic.
        assert!(parse_hash(&format!("{}é", "0".repeat(30))).is_err());
        assert!(parse_hash(&format!("é{}", "0".repeat(30))).is_err());
        assert!(nix_digest("e").is_err());
    }

    #[test]
    fn format_round_trips_and_keeps_order() {
        for s in [
            "00000000000000000000000000000000",
            "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
        ] {
            assert_eq!(format_hash(parse_hash(s).unwrap()), s);
        }
        let a = parse_hash("0zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz").unwrap();
        let b = parse_hash("10000000000000000000000000000000").unwrap();
        assert!(a < b);
    }

    #[test]
    fn depth_from_item_count() {
        let d = |n| Depth::for_item_count(n).get();
        assert_eq!(d(0), 0);
        assert_eq!(d(999), 0);
        assert_eq!(d(1_000), 1);
        assert_eq!(d(99_999), 1);
        assert_eq!(d(100_000), 2);
        assert_eq!(d(9_999_999), 2);
        assert_eq!(d(10_000_000), 3);
        assert_eq!(d(999_999_999), 3);
        assert_eq!(d(1_000_000_000), 4);
        assert!(Depth::new(5).is_err());
    }

    #[test]
    fn split_and_join_by_prefix() {
        let s = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
        let h = parse_hash(s).unwrap();
        for d in 0..=4u64 {
            let depth = Depth::new(d).unwrap();
            let (prefix, suffix) = depth.split(h);
            assert!(suffix <= suffix_mask(depth.suffix_bits()));
            assert_eq!(depth.join(prefix, suffix), h);
            let name = prefix.name();
            if d == 0 {
                assert_eq!(name, "root");
            } else {
                assert_eq!(name, &s[..d as usize]);
            }
            assert_eq!(Prefix::parse(&name).unwrap(), prefix);
        }
        assert_eq!(Depth::new(2).unwrap().prefixes().count(), 1024);
        let two = Depth::new(2).unwrap();
        assert_eq!(two.prefix(1023).unwrap().name(), "zz");
        assert_eq!(two.prefix(1024), None);
        assert_eq!(Depth::new(0).unwrap().prefix(0).unwrap().name(), "root");
        for bad in ["", "abcde", "e", "ROOT", "..", "a/"] {
            assert!(Prefix::parse(bad).is_err(), "{bad}");
        }
    }
}
