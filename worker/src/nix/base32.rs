//! Nix's base-32 encoding: its own alphabet, and bytes read from the last one first.

use thiserror::Error;

/// The 32 characters Nix uses, in value order (no `e`, `o`, `t`, `u`).
pub const ALPHABET: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// Why a string is not valid nix-base32.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Base32Error {
    #[error("invalid nix-base32 character {0:?}")]
    InvalidChar(char),
    #[error("nix-base32 string of length {0} does not encode whole bytes")]
    InvalidLength(usize),
    #[error("nix-base32 string has bits set past its last byte")]
    TrailingBits,
}

/// Each byte's nix-base32 value, or `NOT_BASE32` (a table: hash parsing reads millions
/// of characters when the index is built).
const VALUES: [u8; 256] = {
    let mut table = [NOT_BASE32; 256];
    let mut i = 0;
    while i < 32 {
        table[ALPHABET[i] as usize] = i as u8;
        i += 1;
    }
    table
};
const NOT_BASE32: u8 = 0xff;

/// Value of one nix-base32 character, or `None` if it is not in the alphabet.
pub const fn char_value(c: u8) -> Option<u8> {
    match VALUES[c as usize] {
        NOT_BASE32 => None,
        v => Some(v),
    }
}

/// Length of the encoding of `n` bytes.
pub const fn encoded_len(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        (n * 8 - 1) / 5 + 1
    }
}

/// Number of bytes a string of `len` characters decodes to, if any.
pub fn decoded_len(len: usize) -> Option<usize> {
    let n = len * 5 / 8;
    (encoded_len(n) == len).then_some(n)
}

/// Encodes bytes the way Nix prints hashes (`nix-hash --to-base32`).
pub fn encode(bytes: &[u8]) -> String {
    let len = encoded_len(bytes.len());
    let mut out = String::with_capacity(len);
    for n in (0..len).rev() {
        let b = n * 5;
        let (i, j) = (b / 8, b % 8);
        let lo = bytes[i] >> j;
        let hi = if i + 1 < bytes.len() {
            // j > 3 means the 5 bits straddle into the next byte.
            ((bytes[i + 1] as u16) << (8 - j)) as u8
        } else {
            0
        };
        out.push(ALPHABET[((lo | hi) & 0x1f) as usize] as char);
    }
    out
}

/// Decodes a nix-base32 string into bytes.
pub fn decode(s: &str) -> Result<Vec<u8>, Base32Error> {
    let n = decoded_len(s.len()).ok_or(Base32Error::InvalidLength(s.len()))?;
    let mut out = vec![0u8; n];
    for (pos, c) in s.bytes().rev().enumerate() {
        let digit = char_value(c).ok_or(Base32Error::InvalidChar(c as char))? as u16;
        let b = pos * 5;
        let (i, j) = (b / 8, b % 8);
        out[i] |= (digit << j) as u8;
        let carry = (digit << j) >> 8;
        if i + 1 < n {
            out[i + 1] |= carry as u8;
        } else if carry != 0 {
            return Err(Base32Error::TrailingBits);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn char_values_are_alphabet_positions() {
        for c in 0..=255u8 {
            let want = ALPHABET.iter().position(|&a| a == c).map(|i| i as u8);
            assert_eq!(char_value(c), want, "{c}");
        }
    }

    #[test]
    fn sha256_of_empty_string_matches_nix() {
        // `nix-hash --type sha256 --to-base32 e3b0c442...b855`
        let digest = [
            0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f,
            0xb9, 0x24, 0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b,
            0x78, 0x52, 0xb8, 0x55,
        ];
        let s = encode(&digest);
        assert_eq!(s, "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73");
        assert_eq!(decode(&s).unwrap(), digest);
    }

    #[test]
    fn round_trips_every_length() {
        for n in 0..40usize {
            let bytes: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode(&encode(&bytes)).unwrap(), bytes, "length {n}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(decode("e").unwrap_err(), Base32Error::InvalidLength(1));
        assert_eq!(
            decode(&"e".repeat(32)).unwrap_err(),
            Base32Error::InvalidChar('e')
        );
        // 32 chars hold 160 bits exactly; 52 chars hold 260 bits for 256: top bits must be 0.
        assert_eq!(
            decode(&"z".repeat(52)).unwrap_err(),
            Base32Error::TrailingBits
        );
    }
}
