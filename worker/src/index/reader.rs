//! Shard reader: parse and check a decompressed shard, look suffixes up, list all items.

use ruint::aliases::U160;
use xxhash_rust::xxh64::xxh64;

use super::bits::BitReader;
use super::hash::{suffix_mask, to_be_bytes};
use super::header::{
    ShardError, ShardHeader, SparseEntry, HEADER_LEN, SPARSE_ENTRY_LEN, SPARSE_INTERVAL,
};
use super::rice;

/// A decompressed shard whose header, sparse index and checksum have been checked.
#[derive(Debug, Clone)]
pub struct Shard {
    header: ShardHeader,
    bytes: Vec<u8>,
    data_start: usize,
    /// Largest suffix the header's suffix_bits allow (computed once: lookups compare often).
    max: U160,
}

impl Shard {
    /// Parses a decompressed shard, checking the header, the sparse index and the data checksum.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, ShardError> {
        let header = ShardHeader::parse(&bytes)?;
        let data_start = match header.data_offset() {
            Some(o) if o <= bytes.len() => o,
            _ => {
                return Err(ShardError::Truncated {
                    need: HEADER_LEN as u128
                        + SPARSE_ENTRY_LEN as u128 * header.sparse_count as u128,
                    len: bytes.len(),
                })
            }
        };
        let data = &bytes[data_start..];
        let actual = xxh64(data, 0);
        if actual != header.checksum {
            return Err(ShardError::Checksum {
                expected: header.checksum,
                actual,
            });
        }
        if header.item_count == 0 && !data.is_empty() {
            return Err(ShardError::Corrupt {
                item: 0,
                reason: "empty shard has a data section",
            });
        }
        let shard = Shard {
            header,
            bytes,
            data_start,
            max: suffix_mask(header.suffix_bits as u32),
        };
        shard.check_sparse()?;
        Ok(shard)
    }

    /// Entries must rise strictly, fit the suffix bits, and point inside the data in order.
    fn check_sparse(&self) -> Result<(), ShardError> {
        let max = self.max;
        let data_len = self.data().len() as u64;
        // The first item takes ⌈suffix_bits/8⌉ bytes; every later block at least one.
        let mut min_offset = (self.header.suffix_bits as u64).div_ceil(8).max(1);
        let mut prev: Option<U160> = None;
        for j in 0..self.header.sparse_count {
            let e = self.entry(j);
            let rising = prev.is_none_or(|p| e.suffix > p);
            if !rising || e.suffix > max || e.offset < min_offset || e.offset > data_len {
                return Err(ShardError::SparseEntry { entry: j });
            }
            prev = Some(e.suffix);
            min_offset = e.offset + 1;
        }
        Ok(())
    }

    /// The checked header.
    pub fn header(&self) -> &ShardHeader {
        &self.header
    }

    /// Number of items.
    pub fn len(&self) -> u64 {
        self.header.item_count
    }

    /// Whether the shard holds no items.
    pub fn is_empty(&self) -> bool {
        self.header.item_count == 0
    }

    /// The whole decompressed shard.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn data(&self) -> &[u8] {
        &self.bytes[self.data_start..]
    }

    fn entry_bytes(&self, j: u64) -> &[u8; SPARSE_ENTRY_LEN] {
        // j < sparse_count, and parse checked the sparse index lies inside the bytes.
        let at = HEADER_LEN + j as usize * SPARSE_ENTRY_LEN;
        self.bytes[at..at + SPARSE_ENTRY_LEN]
            .try_into()
            .unwrap_or(&[0u8; SPARSE_ENTRY_LEN])
    }

    /// Sparse entry `j` (j < sparse_count).
    pub fn entry(&self, j: u64) -> SparseEntry {
        SparseEntry::from_bytes(self.entry_bytes(j))
    }

    /// Whether `suffix` is in the shard: binary search, then at most 255 codes.
    pub fn contains(&self, suffix: U160) -> Result<bool, ShardError> {
        let h = &self.header;
        if h.item_count == 0 || suffix > self.max {
            return Ok(false);
        }
        let want = to_be_bytes(suffix);
        // Big-endian bytes compare like the numbers they hold.
        let mut lo = 0u64;
        let mut hi = h.sparse_count;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.entry_bytes(mid)[..20] <= want[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        if lo == 0 {
            return Ok(false);
        }
        let j = lo - 1;
        let e = self.entry(j);
        if e.suffix == suffix {
            return Ok(true);
        }
        let first = j * SPARSE_INTERVAL;
        let codes = (h.item_count - 1 - first).min(SPARSE_INTERVAL - 1);
        let mut r = BitReader::at_byte(self.data(), e.offset as usize);
        let mut cur = e.suffix;
        for c in 1..=codes {
            let item = first + c;
            cur = self.step(&mut r, cur, item)?;
            if cur >= suffix {
                return Ok(cur == suffix);
            }
        }
        Ok(false)
    }

    /// Decodes one gap and adds it to `cur`, checking it is positive and stays in range.
    fn step(&self, r: &mut BitReader<'_>, cur: U160, item: u64) -> Result<U160, ShardError> {
        let bits = self.header.suffix_bits as u32;
        let d = rice::decode(r, self.header.k, bits)
            .map_err(|source| ShardError::Rice { item, source })?;
        if d.is_zero() {
            return Err(ShardError::Corrupt {
                item,
                reason: "gap of zero (duplicate item)",
            });
        }
        match cur.checked_add(d) {
            Some(v) if v <= self.max => Ok(v),
            _ => Err(ShardError::Corrupt {
                item,
                reason: "suffix past the end of its range",
            }),
        }
    }

    /// Every item in order, checking each 256th against the sparse index and the padding.
    pub fn iter(&self) -> ShardIter<'_> {
        ShardIter {
            shard: self,
            reader: BitReader::new(self.data()),
            next: 0,
            cur: U160::ZERO,
            failed: false,
        }
    }

    /// Decodes the whole shard once, reporting the first inconsistency.
    pub fn validate(&self) -> Result<(), ShardError> {
        self.iter().try_for_each(|r| r.map(|_| ()))
    }
}

/// Iterator over a shard's suffixes; stops after the first error.
#[derive(Debug)]
pub struct ShardIter<'a> {
    shard: &'a Shard,
    reader: BitReader<'a>,
    next: u64,
    cur: U160,
    failed: bool,
}

impl ShardIter<'_> {
    fn advance(&mut self) -> Result<U160, ShardError> {
        let i = self.next;
        let bits = self.shard.header.suffix_bits as u32;
        let v = if i == 0 {
            self.reader.read_u160(bits).map_err(|e| ShardError::Rice {
                item: 0,
                source: e.into(),
            })?
        } else {
            self.shard.step(&mut self.reader, self.cur, i)?
        };
        if i.is_multiple_of(SPARSE_INTERVAL) {
            self.reader.align().map_err(|e| ShardError::Rice {
                item: i,
                source: e.into(),
            })?;
            let e = self.shard.entry(i / SPARSE_INTERVAL);
            if e.suffix != v || e.offset != self.reader.byte_pos() as u64 {
                return Err(ShardError::Corrupt {
                    item: i,
                    reason: "disagrees with its sparse index entry",
                });
            }
        }
        if i + 1 == self.shard.header.item_count {
            self.reader.align().map_err(|e| ShardError::Rice {
                item: i,
                source: e.into(),
            })?;
            if self.reader.remaining() != 0 {
                return Err(ShardError::Corrupt {
                    item: i,
                    reason: "bytes after the last item",
                });
            }
        }
        Ok(v)
    }
}

impl Iterator for ShardIter<'_> {
    type Item = Result<U160, ShardError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.shard.header.item_count {
            return None;
        }
        match self.advance() {
            Ok(v) => {
                self.cur = v;
                self.next += 1;
                Some(Ok(v))
            }
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::Depth;
    use crate::index::shard::{encode_shard, ShardWriter};

    fn fixture() -> Vec<u8> {
        let mut w = ShardWriter::with_k(Depth::new(0).unwrap(), 300, 8).unwrap();
        for i in 0..300u64 {
            w.push(U160::from(i)).unwrap();
        }
        w.finish().unwrap()
    }

    /// Rewrites the data checksum so a test reaches the checks after it.
    fn reseal(mut f: Vec<u8>) -> Vec<u8> {
        let h = ShardHeader::parse(&f).unwrap();
        let start = h.data_offset().unwrap();
        let sum = xxh64(&f[start..], 0);
        f[34..42].copy_from_slice(&sum.to_le_bytes());
        f
    }

    #[test]
    fn truncated_shards_are_errors() {
        let f = fixture();
        for cut in [0, 10, 63, 64, 100, 119, 120, 200, 476] {
            assert!(Shard::parse(f[..cut].to_vec()).is_err(), "cut at {cut}");
        }
        // Cut data with a matching checksum: parse passes, decoding finds the damage.
        let s = Shard::parse(reseal(f[..300].to_vec()));
        assert!(s.is_err() || s.unwrap().validate().is_err());
    }

    #[test]
    fn bad_checksum_is_an_error() {
        let mut f = fixture();
        f[200] ^= 1;
        assert!(matches!(Shard::parse(f), Err(ShardError::Checksum { .. })));
    }

    #[test]
    fn sparse_index_out_of_order_is_an_error() {
        let mut f = fixture();
        // Entry 1's suffix (256) becomes 0, equal to entry 0's.
        f[92 + 18] = 0;
        assert_eq!(
            Shard::parse(reseal(f)).unwrap_err(),
            ShardError::SparseEntry { entry: 1 }
        );
        let mut f = fixture();
        f[112..120].copy_from_slice(&9999u64.to_le_bytes());
        assert!(Shard::parse(f).is_err());
    }

    #[test]
    fn corrupt_codes_are_errors_not_panics() {
        // Flip every data bit in turn (checksum resealed): an error, or a sorted decode;
        // flips in the last item's remainder are only caught by the checksum.
        let base = fixture();
        for byte in 120..base.len() {
            for bit in 0..8 {
                let mut f = base.clone();
                f[byte] ^= 1 << bit;
                let Ok(s) = Shard::parse(reseal(f)) else {
                    continue;
                };
                if let Ok(items) = s.iter().collect::<Result<Vec<_>, _>>() {
                    assert!(items.windows(2).all(|w| w[0] < w[1]), "flip {byte}.{bit}");
                    assert_ne!(items, (0..300u64).map(U160::from).collect::<Vec<_>>());
                }
                for v in [0u64, 5, 255, 256, 257, 299, 300] {
                    let _ = s.contains(U160::from(v));
                }
            }
        }
    }

    #[test]
    fn zero_gap_is_an_error() {
        // Items 0 and 1 at k = 8, then overwrite the gap's remainder with zero.
        let mut w = ShardWriter::with_k(Depth::new(0).unwrap(), 2, 8).unwrap();
        w.push(U160::ZERO).unwrap();
        w.push(U160::from(1u8)).unwrap();
        let mut f = w.finish().unwrap();
        let n = f.len();
        f[n - 2] = 0;
        f[n - 1] = 0;
        let s = Shard::parse(reseal(f)).unwrap();
        assert!(matches!(
            s.contains(U160::from(5u8)),
            Err(ShardError::Corrupt { .. })
        ));
        assert!(s.validate().is_err());
    }

    #[test]
    fn trailing_bytes_are_an_error() {
        let mut f = encode_shard(Depth::new(2).unwrap(), &[U160::from(3u8)]).unwrap();
        f.push(0);
        let s = Shard::parse(reseal(f)).unwrap();
        assert!(s.validate().is_err());
    }
}
