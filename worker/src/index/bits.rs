//! Bit streams written and read most significant bit first within each byte.

use ruint::aliases::U160;
use thiserror::Error;

/// Why a bit stream could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BitsError {
    #[error("bit stream ends at bit {end}, wanted {wanted} bits at bit {at}")]
    Eof { at: usize, wanted: u64, end: usize },
    #[error("unary run at bit {at} is longer than the limit of {limit} bits")]
    UnaryTooLong { at: usize, limit: u64 },
    #[error("padding at bit {at} is not zero")]
    Padding { at: usize },
}

/// Appends bits to a byte buffer, most significant bit first.
#[derive(Debug, Default)]
pub struct BitWriter {
    buf: Vec<u8>,
    /// Pending bits, right-aligned; fewer than 8 between calls.
    acc: u64,
    nacc: u32,
}

impl BitWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes the low `n` bits of `v` (n ≤ 56), most significant first.
    fn write_small(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 56);
        if n == 0 {
            return;
        }
        let v = v & ((1u64 << n) - 1);
        // nacc < 8 and n ≤ 56, so the accumulator never holds more than 63 bits.
        self.acc = (self.acc << n) | v;
        self.nacc += n;
        while self.nacc >= 8 {
            self.nacc -= 8;
            self.buf.push((self.acc >> self.nacc) as u8);
        }
        self.acc &= (1u64 << self.nacc) - 1;
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), most significant first.
    pub fn write_bits(&mut self, v: u64, n: u32) {
        assert!(n <= 64, "write_bits takes at most 64 bits");
        if n > 32 {
            self.write_small(v >> 32, n - 32);
            self.write_small(v & 0xffff_ffff, 32);
        } else {
            self.write_small(v, n);
        }
    }

    /// Writes the low `n` bits of a 160-bit value (n ≤ 160), most significant first.
    pub fn write_u160(&mut self, v: U160, n: u32) {
        assert!(n <= 160, "write_u160 takes at most 160 bits");
        let limbs = v.as_limbs();
        let mut left = n;
        while left > 0 {
            let take = left.min(32);
            let lo = left - take;
            let (limb, shift) = ((lo / 64) as usize, lo % 64);
            // The 32-bit window may straddle two limbs.
            let mut w = limbs[limb] >> shift;
            if shift > 32 && limb + 1 < limbs.len() {
                w |= limbs[limb + 1] << (64 - shift);
            }
            self.write_small(w, take);
            left = lo;
        }
    }

    /// Writes `count` one bits.
    pub fn write_ones(&mut self, mut count: u64) {
        while count > 0 {
            let take = count.min(32) as u32;
            self.write_small(u64::MAX, take);
            count -= take as u64;
        }
    }

    /// Pads with zero bits up to the next byte boundary.
    pub fn align(&mut self) {
        if self.nacc > 0 {
            let pad = 8 - self.nacc;
            self.write_small(0, pad);
        }
    }

    /// Bits written so far.
    pub fn bit_len(&self) -> u64 {
        self.buf.len() as u64 * 8 + self.nacc as u64
    }

    /// Whole bytes written so far (the offset of the next byte after `align`).
    pub fn byte_len(&self) -> usize {
        self.buf.len()
    }

    /// Pads to a byte boundary and returns the bytes.
    pub fn finish(mut self) -> Vec<u8> {
        self.align();
        self.buf
    }
}

/// Reads bits from a byte slice, most significant first; never past its end.
#[derive(Debug, Clone)]
pub struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> BitReader<'a> {
    /// A reader at bit 0 of `data`.
    pub fn new(data: &'a [u8]) -> Self {
        BitReader { data, pos: 0 }
    }

    /// A reader starting at byte `offset` (clamped to the end).
    pub fn at_byte(data: &'a [u8], offset: usize) -> Self {
        BitReader {
            data,
            pos: offset.min(data.len()).saturating_mul(8),
        }
    }

    /// Current position in bits.
    pub fn bit_pos(&self) -> usize {
        self.pos
    }

    /// Bits left to read.
    pub fn remaining(&self) -> usize {
        self.data.len() * 8 - self.pos
    }

    fn eof(&self, wanted: u64) -> BitsError {
        BitsError::Eof {
            at: self.pos,
            wanted,
            end: self.data.len() * 8,
        }
    }

    /// The next 64 bits starting at the current position, zero-filled past the end.
    fn peek64(&self) -> u64 {
        let byte = self.pos / 8;
        let off = self.pos % 8;
        let v = match self.data.get(byte..byte + 16) {
            // Fast path: one fixed-size load, no length-dependent copy.
            Some(chunk) => {
                let mut w = [0u8; 16];
                w.copy_from_slice(chunk);
                u128::from_be_bytes(w)
            }
            None => {
                let mut w = [0u8; 16];
                let avail = self.data.len().saturating_sub(byte).min(9);
                w[..avail].copy_from_slice(&self.data[byte..byte + avail]);
                u128::from_be_bytes(w)
            }
        };
        ((v << off) >> 64) as u64
    }

    /// Reads `n` bits (n ≤ 64) as an unsigned integer.
    pub fn read_bits(&mut self, n: u32) -> Result<u64, BitsError> {
        assert!(n <= 64, "read_bits takes at most 64 bits");
        if n == 0 {
            return Ok(0);
        }
        if (n as usize) > self.remaining() {
            return Err(self.eof(n as u64));
        }
        let v = self.peek64() >> (64 - n);
        self.pos += n as usize;
        Ok(v)
    }

    /// Reads `n` bits (n ≤ 160) as a 160-bit integer.
    pub fn read_u160(&mut self, n: u32) -> Result<U160, BitsError> {
        assert!(n <= 160, "read_u160 takes at most 160 bits");
        if (n as usize) > self.remaining() {
            return Err(self.eof(n as u64));
        }
        // Fill little-endian limbs from the top: the first chunk holds the bits above
        // the last whole 64-bit limbs, so no 160-bit shifts are needed.
        let mut limbs = [0u64; 3];
        let whole = (n / 64) as usize;
        let top = n % 64;
        if top > 0 {
            limbs[whole] = self.read_bits(top)?;
        }
        for i in (0..whole).rev() {
            limbs[i] = self.read_bits(64)?;
        }
        Ok(U160::from_limbs(limbs))
    }

    /// Counts one bits up to and including the terminating zero; errors past `limit` ones.
    pub fn read_unary(&mut self, limit: u64) -> Result<u64, BitsError> {
        let start = self.pos;
        let mut count = 0u64;
        loop {
            let avail = self.remaining();
            if avail == 0 {
                return Err(BitsError::Eof {
                    at: start,
                    wanted: count + 1,
                    end: self.data.len() * 8,
                });
            }
            let w = self.peek64();
            let ones = (w.leading_ones() as usize).min(avail);
            count += ones as u64;
            if count > limit {
                return Err(BitsError::UnaryTooLong { at: start, limit });
            }
            self.pos += ones;
            if ones < 64 && ones < avail {
                // The bit after the run is a zero inside the data: consume it.
                self.pos += 1;
                return Ok(count);
            }
        }
    }

    /// Skips to the next byte boundary; the skipped bits must be zero.
    pub fn align(&mut self) -> Result<(), BitsError> {
        let rem = (8 - self.pos % 8) % 8;
        if rem > 0 {
            let at = self.pos;
            if self.read_bits(rem as u32)? != 0 {
                return Err(BitsError::Padding { at });
            }
        }
        Ok(())
    }

    /// Current position in whole bytes (meaningful after `align`).
    pub fn byte_pos(&self) -> usize {
        self.pos.div_ceil(8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn writes_msb_first_and_pads_with_zeros() {
        let mut w = BitWriter::new();
        w.write_bits(0b101, 3);
        w.write_ones(6);
        w.write_bits(0, 1);
        assert_eq!(w.bit_len(), 10);
        assert_eq!(w.finish(), vec![0b1011_1111, 0b1000_0000]);
    }

    #[test]
    fn reader_stops_at_the_end() {
        let mut r = BitReader::new(&[0xff]);
        assert_eq!(r.read_bits(4).unwrap(), 0xf);
        assert!(matches!(r.read_bits(5), Err(BitsError::Eof { .. })));
        // Eight ones and no terminating zero: Eof, not a hang or a wrong count.
        let mut r = BitReader::new(&[0xff]);
        assert!(matches!(r.read_unary(1000), Err(BitsError::Eof { .. })));
        let mut r = BitReader::new(&[0xff; 64]);
        assert!(matches!(
            r.read_unary(100),
            Err(BitsError::UnaryTooLong { limit: 100, .. })
        ));
        let mut r = BitReader::new(&[0b0100_0000]);
        r.read_bits(1).unwrap();
        assert_eq!(r.align(), Err(BitsError::Padding { at: 1 }));
    }

    #[test]
    fn long_unary_runs_cross_words() {
        let mut w = BitWriter::new();
        w.write_ones(200);
        w.write_bits(0, 1);
        w.write_bits(0b11, 2);
        let bytes = w.finish();
        let mut r = BitReader::new(&bytes);
        assert_eq!(r.read_unary(200).unwrap(), 200);
        assert_eq!(r.read_bits(2).unwrap(), 3);
    }

    proptest! {
        #[test]
        fn round_trips_mixed_fields(fields in proptest::collection::vec(
            (any::<[u64; 3]>(), 0u32..=160, 0u64..100), 0..50)) {
            let mut w = BitWriter::new();
            let mut expect = Vec::new();
            for (limbs, n, ones) in &fields {
                let v = U160::from_limbs([limbs[0], limbs[1], limbs[2] & 0xffff_ffff])
                    & crate::index::hash::suffix_mask(*n);
                w.write_u160(v, *n);
                w.write_ones(*ones);
                w.write_bits(0, 1);
                expect.push((v, *n, *ones));
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for (v, n, ones) in expect {
                prop_assert_eq!(r.read_u160(n).unwrap(), v);
                prop_assert_eq!(r.read_unary(ones).unwrap(), ones);
            }
            prop_assert!(r.remaining() < 8);
        }

        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64),
                                    ops in proptest::collection::vec(0u8..4, 0..40)) {
            let mut r = BitReader::new(&data);
            for op in ops {
                let _ = match op {
                    0 => r.read_bits(13).map(|_| ()),
                    1 => r.read_u160(150).map(|_| ()),
                    2 => r.read_unary(70).map(|_| ()),
                    _ => r.align(),
                };
                prop_assert!(r.bit_pos() <= data.len() * 8);
            }
        }
    }
}
