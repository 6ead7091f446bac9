//! Determinate Nix's binary-cache Bloom filter (`nix-cache-index/bloom.bin`).

use ruint::aliases::U160;
use thiserror::Error;

use super::hash::digest_of;

/// First 8 bytes of the file.
pub const MAGIC: &[u8; 8] = b"NixBloom";
/// The only version.
pub const VERSION: u64 = 1;
/// Header: magic, version, k, m as four u64 LE.
pub const HEADER_LEN: usize = 32;
/// Most hash functions accepted from a file: a hostile k must not make lookups crawl.
pub const MAX_K: u64 = 256;

/// Why a Bloom filter cannot be built or read.
#[derive(Debug, Error, PartialEq)]
pub enum BloomError {
    #[error("false-positive rate {0} is not strictly between 0 and 1")]
    Rate(f64),
    #[error("Bloom filter file is {0} bytes, shorter than its header")]
    TooShort(usize),
    #[error("Bloom filter magic is {0:02x?}, not NixBloom")]
    Magic([u8; 8]),
    #[error("Bloom filter version {0} is not 1")]
    Version(u64),
    #[error("k = {0} is not in 1..={MAX_K}")]
    K(u64),
    #[error("m = {0} bits is not a positive multiple of 8")]
    M(u64),
    #[error("Bloom filter is {len} bytes, m = {m} needs {need}")]
    Length { len: usize, m: u64, need: u128 },
}

/// A Bloom filter over Nix's 20-byte digests of hash parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BloomFilter {
    k: u64,
    m: u64,
    bits: Vec<u8>,
}

/// m (bits) and k for `n` items at false-positive rate `p`, by the protocol's formula.
pub fn sizing(n: u64, p: f64) -> Result<(u64, u64), BloomError> {
    if !(p > 0.0 && p < 1.0) {
        return Err(BloomError::Rate(p));
    }
    if n == 0 {
        return Ok((8, 1));
    }
    let ln2 = std::f64::consts::LN_2;
    let raw = (-(n as f64) * p.ln() / (ln2 * ln2)).ceil() as u64;
    let m = raw.div_ceil(8).saturating_mul(8).max(8);
    let k = ((m as f64 / n as f64) * ln2).round().max(1.0) as u64;
    Ok((m, k.min(MAX_K)))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

impl BloomFilter {
    /// An empty filter sized for `n` items at false-positive rate `p`.
    pub fn for_items(n: u64, p: f64) -> Result<Self, BloomError> {
        let (m, k) = sizing(n, p)?;
        Ok(BloomFilter {
            k,
            m,
            bits: vec![0; (m / 8) as usize],
        })
    }

    /// Number of hash functions.
    pub fn k(&self) -> u64 {
        self.k
    }

    /// Size of the bit array in bits.
    pub fn m(&self) -> u64 {
        self.m
    }

    /// The bit positions of a digest: (h1 + i·h2) mod 2^64 mod m for i < k.
    fn positions(&self, digest: &[u8; 20]) -> impl Iterator<Item = usize> {
        let h1 = u64_at(digest, 0);
        let h2 = u64_at(digest, 8);
        let m = self.m;
        (0..self.k).map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m) as usize)
    }

    /// Sets the bits of Nix's 20-byte digest of a hash part.
    pub fn insert_digest(&mut self, digest: &[u8; 20]) {
        for p in self.positions(digest) {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }

    /// Whether a digest may be present (false means certainly absent).
    pub fn contains_digest(&self, digest: &[u8; 20]) -> bool {
        self.positions(digest)
            .all(|p| (self.bits[p / 8] >> (p % 8)) & 1 == 1)
    }

    /// Sets the bits of a hash part given as H.
    pub fn insert(&mut self, h: U160) {
        self.insert_digest(&digest_of(h));
    }

    /// Whether a hash part given as H may be present.
    pub fn contains(&self, h: U160) -> bool {
        self.contains_digest(&digest_of(h))
    }

    /// The file: header then bit array.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.bits.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.k.to_le_bytes());
        out.extend_from_slice(&self.m.to_le_bytes());
        out.extend_from_slice(&self.bits);
        out
    }

    /// Parses and checks a filter file.
    pub fn parse(bytes: &[u8]) -> Result<Self, BloomError> {
        if bytes.len() < HEADER_LEN {
            return Err(BloomError::TooShort(bytes.len()));
        }
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&bytes[..8]);
        if &magic != MAGIC {
            return Err(BloomError::Magic(magic));
        }
        let version = u64_at(bytes, 8);
        if version != VERSION {
            return Err(BloomError::Version(version));
        }
        let k = u64_at(bytes, 16);
        if k == 0 || k > MAX_K {
            return Err(BloomError::K(k));
        }
        let m = u64_at(bytes, 24);
        if m == 0 || !m.is_multiple_of(8) {
            return Err(BloomError::M(m));
        }
        let need = HEADER_LEN as u128 + (m / 8) as u128;
        if bytes.len() as u128 != need {
            return Err(BloomError::Length {
                len: bytes.len(),
                m,
                need,
            });
        }
        Ok(BloomFilter {
            k,
            m,
            bits: bytes[HEADER_LEN..].to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::hash::{nix_digest, parse_hash};
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    fn random_hashes(rng: &mut StdRng, n: usize) -> Vec<U160> {
        (0..n)
            .map(|_| U160::from_limbs([rng.random(), rng.random(), rng.random::<u32>() as u64]))
            .collect()
    }

    #[test]
    fn sizing_follows_the_protocol() {
        // The protocol's own example: ~500,000 paths at 1 % → k = 7, m ≈ 4.7e6.
        let (m, k) = sizing(500_000, 0.01).unwrap();
        assert_eq!(k, 7);
        assert_eq!(m % 8, 0);
        assert!((4_700_000..4_800_000).contains(&m), "{m}");
        assert_eq!(sizing(0, 0.01).unwrap(), (8, 1));
        assert_eq!(sizing(1, 0.5).unwrap().0, 8);
        assert!(sizing(10, 0.0).is_err());
        assert!(sizing(10, 1.0).is_err());
        assert!(sizing(10, f64::NAN).is_err());
    }

    #[test]
    fn positions_use_nix_digest_bytes() {
        let s = "b6gvzjyb2pg0kjfwn6a6llj3k1bq6dwi";
        let mut f = BloomFilter::for_items(1, 0.01).unwrap();
        f.insert(parse_hash(s).unwrap());
        assert!(f.contains_digest(&nix_digest(s).unwrap()));
        // Recompute one bit by hand from the documented recipe.
        let d = nix_digest(s).unwrap();
        let h1 = u64::from_le_bytes(d[0..8].try_into().unwrap());
        let h2 = u64::from_le_bytes(d[8..16].try_into().unwrap());
        let p = h1.wrapping_add(h2) % f.m();
        let bytes = f.to_bytes();
        assert_eq!((bytes[32 + (p / 8) as usize] >> (p % 8)) & 1, 1);
    }

    #[test]
    fn members_hit_and_false_positives_stay_near_the_rate() {
        let mut rng = StdRng::seed_from_u64(195);
        let members = random_hashes(&mut rng, 100_000);
        let p = 0.01;
        let mut f = BloomFilter::for_items(members.len() as u64, p).unwrap();
        members.iter().for_each(|&h| f.insert(h));
        assert!(members.iter().all(|&h| f.contains(h)));
        let probes = random_hashes(&mut rng, 100_000);
        let fp = probes.iter().filter(|&&h| f.contains(h)).count();
        let rate = fp as f64 / probes.len() as f64;
        assert!(rate <= 1.5 * p, "false-positive rate {rate}");
        let back = BloomFilter::parse(&f.to_bytes()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn rejects_bad_files() {
        let good = BloomFilter::for_items(10, 0.01).unwrap().to_bytes();
        assert!(BloomFilter::parse(&good).is_ok());
        assert_eq!(
            BloomFilter::parse(&good[..31]),
            Err(BloomError::TooShort(31))
        );
        let mut b = good.clone();
        b[0] = b'n';
        assert!(matches!(BloomFilter::parse(&b), Err(BloomError::Magic(_))));
        let mut b = good.clone();
        b[8] = 2;
        assert_eq!(BloomFilter::parse(&b), Err(BloomError::Version(2)));
        for k in [0u64, MAX_K + 1, u64::MAX] {
            let mut b = good.clone();
            b[16..24].copy_from_slice(&k.to_le_bytes());
            assert_eq!(BloomFilter::parse(&b), Err(BloomError::K(k)));
        }
        for m in [0u64, 7, 9] {
            let mut b = good.clone();
            b[24..32].copy_from_slice(&m.to_le_bytes());
            assert_eq!(BloomFilter::parse(&b), Err(BloomError::M(m)));
        }
        let mut b = good.clone();
        b[24..32].copy_from_slice(&(u64::MAX - 7).to_le_bytes());
        assert!(matches!(
            BloomFilter::parse(&b),
            Err(BloomError::Length { .. })
        ));
        let mut b = good;
        b.push(0);
        assert!(matches!(
            BloomFilter::parse(&b),
            Err(BloomError::Length { .. })
        ));
    }
}
