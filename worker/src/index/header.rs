//! The 64-byte shard header, the 28-byte sparse-index entries, and shard errors.

use ruint::aliases::U160;
use thiserror::Error;

use super::hash::{from_be_bytes, to_be_bytes, HASH_BITS, MAX_DEPTH};
use super::rice::RiceError;

/// First 8 bytes of every decompressed shard.
pub const MAGIC: &[u8; 8] = b"NIXIDX01";
/// Length of the header.
pub const HEADER_LEN: usize = 64;
/// Length of one sparse-index entry: 20-byte suffix, u64 LE offset.
pub const SPARSE_ENTRY_LEN: usize = 28;
/// Items per sparse-index entry.
pub const SPARSE_INTERVAL: u64 = 256;

/// Why a shard could not be written or read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ShardError {
    #[error("shard is {len} bytes, shorter than its 64-byte header")]
    TooShort { len: usize },
    #[error("shard magic is {0:02x?}, not NIXIDX01")]
    BadMagic([u8; 8]),
    #[error("suffix_bits {0} is not 160 − 5·depth for a depth in 0..=4")]
    BadSuffixBits(u8),
    #[error("Rice parameter k = {k} is larger than suffix_bits {suffix_bits}")]
    BadK { k: u8, suffix_bits: u8 },
    #[error("sparse index offset {0} is not 64")]
    BadSparseOffset(u64),
    #[error("sparse index has {count} entries, {items} items need {want}")]
    BadSparseCount { count: u64, items: u64, want: u64 },
    #[error("shard needs {need} bytes for its sparse index, has {len}")]
    Truncated { need: u128, len: usize },
    #[error("data checksum is {actual:016x}, header says {expected:016x}")]
    Checksum { expected: u64, actual: u64 },
    #[error("sparse entry {entry} is out of order or out of range")]
    SparseEntry { entry: u64 },
    #[error("item {item}: {reason}")]
    Corrupt { item: u64, reason: &'static str },
    #[error("item {item}: {source}")]
    Rice { item: u64, source: RiceError },
    #[error("item {item} is not greater than the one before it")]
    NotSorted { item: u64 },
    #[error("item {item} does not fit in {bits} suffix bits")]
    OutOfRange { item: u64, bits: u32 },
    #[error("shard was declared with {expected} items, got {got}")]
    CountMismatch { expected: u64, got: u64 },
}

/// The fields of a shard header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardHeader {
    /// Items in the shard.
    pub item_count: u64,
    /// Rice parameter.
    pub k: u8,
    /// Bits per suffix (160 − 5·depth).
    pub suffix_bits: u8,
    /// Entries in the sparse index (⌈n/256⌉).
    pub sparse_count: u64,
    /// XXH64 (seed 0) of the data section.
    pub checksum: u64,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Sparse entries a shard of `n` items has.
pub fn sparse_count_for(n: u64) -> u64 {
    n.div_ceil(SPARSE_INTERVAL)
}

impl ShardHeader {
    /// The 64 header bytes (reserved bytes zero).
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(MAGIC);
        b[8..16].copy_from_slice(&self.item_count.to_le_bytes());
        b[16] = self.k;
        b[17] = self.suffix_bits;
        b[18..26].copy_from_slice(&(HEADER_LEN as u64).to_le_bytes());
        b[26..34].copy_from_slice(&self.sparse_count.to_le_bytes());
        b[34..42].copy_from_slice(&self.checksum.to_le_bytes());
        b
    }

    /// Parses and checks the header at the start of `bytes` (reserved bytes ignored).
    pub fn parse(bytes: &[u8]) -> Result<Self, ShardError> {
        if bytes.len() < HEADER_LEN {
            return Err(ShardError::TooShort { len: bytes.len() });
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[0..8]);
        if &magic != MAGIC {
            return Err(ShardError::BadMagic(magic));
        }
        let item_count = u64_at(bytes, 8);
        let k = bytes[16];
        let suffix_bits = bytes[17];
        let prefix_bits = HASH_BITS.checked_sub(suffix_bits as u32);
        match prefix_bits {
            Some(p) if p % 5 == 0 && p / 5 <= MAX_DEPTH as u32 => {}
            _ => return Err(ShardError::BadSuffixBits(suffix_bits)),
        }
        if k > suffix_bits {
            return Err(ShardError::BadK { k, suffix_bits });
        }
        let sparse_offset = u64_at(bytes, 18);
        if sparse_offset != HEADER_LEN as u64 {
            return Err(ShardError::BadSparseOffset(sparse_offset));
        }
        let sparse_count = u64_at(bytes, 26);
        let want = sparse_count_for(item_count);
        if sparse_count != want {
            return Err(ShardError::BadSparseCount {
                count: sparse_count,
                items: item_count,
                want,
            });
        }
        Ok(ShardHeader {
            item_count,
            k,
            suffix_bits,
            sparse_count,
            checksum: u64_at(bytes, 34),
        })
    }

    /// Where the data section starts (64 + 28·count), if that fits in memory.
    pub fn data_offset(&self) -> Option<usize> {
        let len = (HEADER_LEN as u128) + (SPARSE_ENTRY_LEN as u128) * self.sparse_count as u128;
        usize::try_from(len).ok()
    }
}

/// One sparse-index entry: item 256·j's suffix and where item 256·j + 1's code starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SparseEntry {
    /// The item's suffix.
    pub suffix: U160,
    /// Byte offset into the data section.
    pub offset: u64,
}

impl SparseEntry {
    /// The 28 bytes of this entry.
    pub fn to_bytes(&self) -> [u8; SPARSE_ENTRY_LEN] {
        let mut b = [0u8; SPARSE_ENTRY_LEN];
        b[..20].copy_from_slice(&to_be_bytes(self.suffix));
        b[20..].copy_from_slice(&self.offset.to_le_bytes());
        b
    }

    /// Reads an entry from exactly 28 bytes.
    pub fn from_bytes(b: &[u8; SPARSE_ENTRY_LEN]) -> Self {
        let mut s = [0u8; 20];
        s.copy_from_slice(&b[..20]);
        SparseEntry {
            suffix: from_be_bytes(s),
            offset: u64_at(b, 20),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> ShardHeader {
        ShardHeader {
            item_count: 300,
            k: 8,
            suffix_bits: 150,
            sparse_count: 2,
            checksum: 0x0123_4567_89ab_cdef,
        }
    }

    #[test]
    fn header_round_trips_and_lays_out_fields() {
        let b = header().to_bytes();
        assert_eq!(&b[0..8], b"NIXIDX01");
        assert_eq!(b[8..16], 300u64.to_le_bytes());
        assert_eq!((b[16], b[17]), (8, 150));
        assert_eq!(b[18..26], 64u64.to_le_bytes());
        assert_eq!(b[26..34], 2u64.to_le_bytes());
        assert_eq!(b[34..42], 0x0123_4567_89ab_cdefu64.to_le_bytes());
        assert!(b[42..].iter().all(|&x| x == 0));
        assert_eq!(ShardHeader::parse(&b).unwrap(), header());
    }

    #[test]
    fn reserved_bytes_are_ignored() {
        let mut b = header().to_bytes();
        b[42..].fill(0xaa);
        assert_eq!(ShardHeader::parse(&b).unwrap(), header());
    }

    #[test]
    fn rejects_bad_headers() {
        let good = header().to_bytes();
        assert_eq!(
            ShardHeader::parse(&good[..63]),
            Err(ShardError::TooShort { len: 63 })
        );
        let mut b = good;
        b[7] = b'2';
        assert!(matches!(
            ShardHeader::parse(&b),
            Err(ShardError::BadMagic(_))
        ));
        for bits in [0u8, 149, 161, 135, 255] {
            let mut b = good;
            b[17] = bits;
            assert_eq!(
                ShardHeader::parse(&b),
                Err(ShardError::BadSuffixBits(bits)),
                "{bits}"
            );
        }
        let mut b = good;
        b[16] = 151;
        assert!(matches!(
            ShardHeader::parse(&b),
            Err(ShardError::BadK { .. })
        ));
        let mut b = good;
        b[18] = 65;
        assert_eq!(ShardHeader::parse(&b), Err(ShardError::BadSparseOffset(65)));
        let mut b = good;
        b[26] = 3;
        assert!(matches!(
            ShardHeader::parse(&b),
            Err(ShardError::BadSparseCount {
                count: 3,
                items: 300,
                want: 2
            })
        ));
        // A huge item count with a matching huge sparse count must not overflow anything.
        let mut b = good;
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        b[26..34].copy_from_slice(&sparse_count_for(u64::MAX).to_le_bytes());
        let h = ShardHeader::parse(&b).unwrap();
        assert!(h.data_offset().is_some_and(|o| o > 1 << 40));
    }
}
