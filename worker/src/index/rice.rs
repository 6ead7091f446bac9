//! Rice codes of gaps between sorted suffixes, with a parameter chosen per shard.

use ruint::aliases::U160;
use thiserror::Error;

use super::bits::{BitReader, BitWriter, BitsError};

/// Longest unary run (quotient) written or accepted. With the per-shard k a quotient
/// averages about 1.4 and exceeds 64 with probability below 2^-60; the cap only stops
/// a wrong k (or hostile bytes) from producing or demanding gigabits.
pub const MAX_QUOTIENT: u64 = 1 << 24;

/// Why a gap could not be coded or decoded.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RiceError {
    #[error(
        "gap needs a unary run of {quotient} bits at k = {k}, over the limit of {MAX_QUOTIENT}"
    )]
    QuotientTooLarge { quotient: U160, k: u8 },
    #[error("Rice parameter k = {k} is larger than {max}")]
    BadK { k: u8, max: u32 },
    #[error(transparent)]
    Bits(#[from] BitsError),
}

/// The Rice parameter for `n` items spread over `suffix_bits` bits:
/// `clamp(floor(log2(0.69 · 2^suffix_bits / n)), 0, suffix_bits)`, and 0 when n < 2.
pub fn parameter(n: u64, suffix_bits: u32) -> u8 {
    if n < 2 {
        return 0;
    }
    // log2(0.69 · 2^s / n) = s + log2(0.69) − log2(n); the value is never an exact integer
    // for integer n (0.69 is not dyadic), so f64 rounding cannot flip the floor in practice.
    let x = suffix_bits as f64 + 0.69f64.log2() - (n as f64).log2();
    x.floor().clamp(0.0, suffix_bits as f64) as u8
}

/// Writes gap `d` with parameter `k`: ⌊d/2^k⌋ ones, a zero, then the low k bits of d.
pub fn encode(w: &mut BitWriter, d: U160, k: u8) -> Result<(), RiceError> {
    if k as u32 > 160 {
        return Err(RiceError::BadK { k, max: 160 });
    }
    let q = d >> k as usize;
    if q > U160::from(MAX_QUOTIENT) {
        return Err(RiceError::QuotientTooLarge { quotient: q, k });
    }
    w.write_ones(q.as_limbs()[0]);
    w.write_bits(0, 1);
    w.write_u160(d, k as u32);
    Ok(())
}

/// Reads one gap coded with parameter `k`; the gap must fit in `value_bits` bits.
pub fn decode(r: &mut BitReader<'_>, k: u8, value_bits: u32) -> Result<U160, RiceError> {
    if k as u32 > value_bits {
        return Err(RiceError::BadK { k, max: value_bits });
    }
    // A quotient q contributes q·2^k, so it can be at most 2^(value_bits−k) − 1.
    let room = value_bits - k as u32;
    let limit = if room >= 64 {
        MAX_QUOTIENT
    } else {
        MAX_QUOTIENT.min((1u64 << room) - 1)
    };
    let q = r.read_unary(limit)?;
    let rem = r.read_u160(k as u32)?;
    if q == 0 {
        return Ok(rem);
    }
    // q ≤ 2^room − 1 and rem < 2^k, so the gap fits in value_bits bits.
    Ok((U160::from(q) << k as usize) | rem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn k8_d1000_is_ee80() {
        let mut w = BitWriter::new();
        encode(&mut w, U160::from(1000u32), 8).unwrap();
        let bytes = w.finish();
        assert_eq!(bytes, [0xEE, 0x80]);
        let mut r = BitReader::new(&bytes);
        assert_eq!(decode(&mut r, 8, 160).unwrap(), U160::from(1000u32));
    }

    #[test]
    fn parameter_follows_the_formula() {
        assert_eq!(parameter(0, 160), 0);
        assert_eq!(parameter(1, 160), 0);
        // log2(0.69 · 2^160 / 2) = 158.46…
        assert_eq!(parameter(2, 160), 158);
        // 10,000 items at depth 1: 155 − 0.535 − 13.29 = 141.17
        assert_eq!(parameter(10_000, 155), 141);
        // More items than the space can hold clamps at 0.
        assert_eq!(parameter(u64::MAX, 0), 0);
        assert_eq!(parameter(1 << 20, 10), 0);
    }

    #[test]
    fn refuses_runaway_quotients() {
        let mut w = BitWriter::new();
        let err = encode(&mut w, U160::MAX, 4).unwrap_err();
        assert!(matches!(err, RiceError::QuotientTooLarge { k: 4, .. }));
        // All ones: the reader stops at the value range, not at the end of memory.
        let ones = vec![0xffu8; 1024];
        let mut r = BitReader::new(&ones);
        assert!(matches!(
            decode(&mut r, 150, 155),
            Err(RiceError::Bits(BitsError::UnaryTooLong { limit: 31, .. }))
        ));
        let mut r = BitReader::new(&ones);
        assert!(matches!(decode(&mut r, 3, 2), Err(RiceError::BadK { .. })));
    }

    #[test]
    fn rejects_gaps_past_the_value_range() {
        // q = 1 at k = 160 − 0 would be 2^160: room = 0 means no ones are allowed.
        let mut r = BitReader::new(&[0x80, 0, 0]);
        assert!(decode(&mut r, 4, 4).is_err());
    }

    proptest! {
        #[test]
        fn round_trips(d in any::<u128>(), shift in 0usize..32, k in 0u8..=160) {
            let d = U160::from(d) << shift;
            let mut w = BitWriter::new();
            match encode(&mut w, d, k) {
                Ok(()) => {
                    let bytes = w.finish();
                    let mut r = BitReader::new(&bytes);
                    prop_assert_eq!(decode(&mut r, k, 160).unwrap(), d);
                }
                Err(RiceError::QuotientTooLarge { .. }) => {
                    prop_assert!((d >> k as usize) > U160::from(MAX_QUOTIENT));
                }
                Err(e) => prop_assert!(false, "unexpected {e}"),
            }
        }
    }
}
