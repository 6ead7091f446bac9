//! Streaming shard writer: sorted suffixes in, one decompressed shard file out.

use ruint::aliases::U160;
use xxhash_rust::xxh64::xxh64;

use super::bits::BitWriter;
use super::hash::{suffix_mask, Depth};
use super::header::{sparse_count_for, ShardError, ShardHeader, SparseEntry, SPARSE_INTERVAL};
use super::rice;

/// Builds one shard from suffixes that arrive sorted, never holding the items themselves:
/// memory is the sparse index plus the encoded data (about n·(bits − log2 n + 2)/8 bytes).
#[derive(Debug)]
pub struct ShardWriter {
    suffix_bits: u32,
    k: u8,
    expected: u64,
    count: u64,
    last: U160,
    data: BitWriter,
    sparse: Vec<u8>,
}

impl ShardWriter {
    /// A writer for exactly `n` items at `depth`, with the per-shard Rice parameter.
    pub fn new(depth: Depth, n: u64) -> Self {
        let k = rice::parameter(n, depth.suffix_bits());
        Self::build(depth, n, k)
    }

    /// A writer with an explicit Rice parameter (for test vectors and other writers' k).
    pub fn with_k(depth: Depth, n: u64, k: u8) -> Result<Self, ShardError> {
        let suffix_bits = depth.suffix_bits() as u8;
        if k > suffix_bits {
            return Err(ShardError::BadK { k, suffix_bits });
        }
        Ok(Self::build(depth, n, k))
    }

    fn build(depth: Depth, n: u64, k: u8) -> Self {
        // Reserve what the sparse index will need, but not trust a huge n blindly.
        let entries = sparse_count_for(n).min(1 << 20) as usize;
        ShardWriter {
            suffix_bits: depth.suffix_bits(),
            k,
            expected: n,
            count: 0,
            last: U160::ZERO,
            data: BitWriter::new(),
            sparse: Vec::with_capacity(entries * 28),
        }
    }

    /// The Rice parameter this shard uses.
    pub fn k(&self) -> u8 {
        self.k
    }

    /// Adds the next suffix; it must be greater than the previous one and fit the suffix bits.
    pub fn push(&mut self, suffix: U160) -> Result<(), ShardError> {
        let i = self.count;
        if i >= self.expected {
            return Err(ShardError::CountMismatch {
                expected: self.expected,
                got: i + 1,
            });
        }
        if suffix > suffix_mask(self.suffix_bits) {
            return Err(ShardError::OutOfRange {
                item: i,
                bits: self.suffix_bits,
            });
        }
        if i == 0 {
            self.data.write_u160(suffix, self.suffix_bits);
        } else {
            if suffix <= self.last {
                return Err(ShardError::NotSorted { item: i });
            }
            rice::encode(&mut self.data, suffix - self.last, self.k)
                .map_err(|source| ShardError::Rice { item: i, source })?;
        }
        if i.is_multiple_of(SPARSE_INTERVAL) {
            self.data.align();
            let entry = SparseEntry {
                suffix,
                offset: self.data.byte_len() as u64,
            };
            self.sparse.extend_from_slice(&entry.to_bytes());
        }
        self.last = suffix;
        self.count += 1;
        Ok(())
    }

    /// Pads the data, checksums it and returns the whole decompressed shard.
    pub fn finish(self) -> Result<Vec<u8>, ShardError> {
        if self.count != self.expected {
            return Err(ShardError::CountMismatch {
                expected: self.expected,
                got: self.count,
            });
        }
        let data = self.data.finish();
        let header = ShardHeader {
            item_count: self.count,
            k: self.k,
            suffix_bits: self.suffix_bits as u8,
            sparse_count: sparse_count_for(self.count),
            checksum: xxh64(&data, 0),
        };
        let mut out = Vec::with_capacity(64 + self.sparse.len() + data.len());
        out.extend_from_slice(&header.to_bytes());
        out.extend_from_slice(&self.sparse);
        out.extend_from_slice(&data);
        Ok(out)
    }
}

/// Encodes a whole shard from sorted, unique suffixes.
pub fn encode_shard(depth: Depth, suffixes: &[U160]) -> Result<Vec<u8>, ShardError> {
    let mut w = ShardWriter::new(depth, suffixes.len() as u64);
    for &s in suffixes {
        w.push(s)?;
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::reader::Shard;

    fn depth(d: u64) -> Depth {
        Depth::new(d).unwrap()
    }

    fn write(d: u64, k: u8, items: impl IntoIterator<Item = u64>) -> Vec<u8> {
        let items: Vec<U160> = items.into_iter().map(U160::from).collect();
        let mut w = ShardWriter::with_k(depth(d), items.len() as u64, k).unwrap();
        for s in items {
            w.push(s).unwrap();
        }
        w.finish().unwrap()
    }

    #[test]
    fn vector_two_items_k4() {
        let f = write(0, 4, [11, 12]);
        assert_eq!(f.len(), 113);
        assert_eq!(&f[..8], b"NIXIDX01");
        assert_eq!(f[8..16], 2u64.to_le_bytes());
        assert_eq!((f[16], f[17]), (4, 0xA0));
        assert_eq!(f[18..26], 64u64.to_le_bytes());
        assert_eq!(f[26..34], 1u64.to_le_bytes());
        assert_eq!(f[34..42], 0x8e742a5881d5afcfu64.to_le_bytes());
        assert_eq!(f[42..64], [0u8; 22]);
        let mut entry = vec![0u8; 19];
        entry.push(0x0B);
        entry.extend_from_slice(&20u64.to_le_bytes());
        assert_eq!(f[64..92], entry[..]);
        let mut data = vec![0u8; 19];
        data.extend_from_slice(&[0x0B, 0x08]);
        assert_eq!(f[92..], data[..]);
        assert_eq!(xxh64(&data, 0), 0x8e742a5881d5afcf);

        let shard = Shard::parse(f).unwrap();
        for (v, want) in [(10u64, false), (11, true), (12, true), (13, false)] {
            assert_eq!(shard.contains(U160::from(v)).unwrap(), want, "{v}");
        }
    }

    #[test]
    fn vector_300_items_k8() {
        let f = write(0, 8, 0..300);
        assert_eq!(f.len(), 477);
        assert_eq!(f[26..34], 2u64.to_le_bytes());
        assert_eq!(f[34..42], 0x593a5483f290caccu64.to_le_bytes());
        assert_eq!(f[64..84], [0u8; 20]);
        assert_eq!(f[84..92], 20u64.to_le_bytes());
        let mut e1 = [0u8; 20];
        e1[18] = 1; // 256 big-endian
        assert_eq!(f[92..112], e1);
        assert_eq!(f[112..120], 308u64.to_le_bytes());
        let mut data = vec![0u8; 20];
        for _ in 0..37 {
            data.extend_from_slice(&[0x00, 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01]);
        }
        data.extend_from_slice(&[0x00, 0x80, 0x40, 0x20]);
        assert_eq!(data.len(), 357);
        assert_eq!(f[120..], data[..]);

        let shard = Shard::parse(f).unwrap();
        let all: Vec<U160> = shard.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all, (0..300u64).map(U160::from).collect::<Vec<_>>());
        assert!(!shard.contains(U160::from(300u64)).unwrap());
        assert!(shard.contains(U160::from(256u64)).unwrap());
        assert!(shard.contains(U160::from(299u64)).unwrap());
    }

    #[test]
    fn empty_and_single_item_shards() {
        let f = encode_shard(depth(1), &[]).unwrap();
        assert_eq!(f.len(), 64);
        assert_eq!(f[34..42], xxh64(&[], 0).to_le_bytes());
        let shard = Shard::parse(f).unwrap();
        assert!(!shard.contains(U160::ZERO).unwrap());
        assert_eq!(shard.iter().count(), 0);

        let one = U160::from(7u8);
        let f = encode_shard(depth(1), &[one]).unwrap();
        // 155 bits raw, padded to 20 bytes; one sparse entry.
        assert_eq!(f.len(), 64 + 28 + 20);
        let shard = Shard::parse(f).unwrap();
        assert!(shard.contains(one).unwrap());
        assert!(!shard.contains(U160::from(8u8)).unwrap());
    }

    #[test]
    fn writer_rejects_unsorted_duplicate_wide_and_miscounted_input() {
        let d = depth(1);
        let mut w = ShardWriter::new(d, 3);
        w.push(U160::from(5u8)).unwrap();
        assert_eq!(
            w.push(U160::from(5u8)),
            Err(ShardError::NotSorted { item: 1 })
        );
        assert_eq!(
            w.push(U160::from(4u8)),
            Err(ShardError::NotSorted { item: 1 })
        );
        assert_eq!(
            w.push(U160::from(1u8) << 155),
            Err(ShardError::OutOfRange { item: 1, bits: 155 })
        );
        assert_eq!(
            w.finish(),
            Err(ShardError::CountMismatch {
                expected: 3,
                got: 1
            })
        );
        let mut w = ShardWriter::new(d, 0);
        assert!(matches!(
            w.push(U160::ZERO),
            Err(ShardError::CountMismatch { .. })
        ));
        assert!(ShardWriter::with_k(d, 2, 156).is_err());
        // A k far too small for the gaps is refused instead of writing 2^100 ones.
        let mut w = ShardWriter::with_k(depth(0), 2, 0).unwrap();
        w.push(U160::ZERO).unwrap();
        assert!(matches!(
            w.push(U160::from(1u8) << 100),
            Err(ShardError::Rice { item: 1, .. })
        ));
    }
}
