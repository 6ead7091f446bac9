//! SHA-256 hashes as Nix writes them: `sha256:<nix-base32>`, also read from hex and SRI.

use std::fmt;
use std::io::{self, Write};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::{base32, preview};

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// Why a string is not a hash Larder understands.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HashError {
    #[error("hash {0:?} has no algorithm prefix (expected `sha256:` or `sha256-`)")]
    MissingAlgorithm(String),
    #[error("hash {input:?} uses algorithm {algo:?}; only sha256 is supported")]
    UnsupportedAlgorithm { algo: String, input: String },
    #[error(
        "sha256 hash {input:?} has {len} digest characters; expected 52 (nix-base32), 64 (hex) or 44 (base64)"
    )]
    BadLength { input: String, len: usize },
    #[error("hash {input:?} is not valid {encoding}")]
    BadDigest {
        encoding: &'static str,
        input: String,
    },
}

/// A SHA-256 hash, the only kind narinfos of this cache carry (`NarHash`, `FileHash`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NixHash([u8; SHA256_LEN]);

impl NixHash {
    /// Wraps a raw SHA-256 digest.
    pub const fn from_digest(digest: [u8; SHA256_LEN]) -> Self {
        Self(digest)
    }

    /// Hashes bytes held in memory.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// The raw digest.
    pub fn digest(&self) -> &[u8; SHA256_LEN] {
        &self.0
    }

    /// The digest in nix-base32 (52 characters), as in store object names.
    pub fn to_base32(&self) -> String {
        base32::encode(&self.0)
    }

    /// The digest in lowercase hex (64 characters).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The digest in standard padded base64, as S3's `x-amz-checksum-sha256` wants it.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// The SRI form `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", self.to_base64())
    }

    /// Parses `sha256:<52 nix-base32 | 64 hex | 44 base64>` or SRI `sha256-<base64>`.
    pub fn parse(input: &str) -> Result<Self, HashError> {
        let (algo, digest, sri) = match input.find([':', '-']) {
            Some(i) => (&input[..i], &input[i + 1..], input.as_bytes()[i] == b'-'),
            None => return Err(HashError::MissingAlgorithm(preview(input))),
        };
        if algo != "sha256" {
            return Err(HashError::UnsupportedAlgorithm {
                algo: preview(algo),
                input: preview(input),
            });
        }
        let bad = |encoding| HashError::BadDigest {
            encoding,
            input: preview(input),
        };
        let bytes = match (sri, digest.len()) {
            (false, 52) => base32::decode(digest).map_err(|_| bad("nix-base32"))?,
            (false, 64) => hex::decode(digest).map_err(|_| bad("hex"))?,
            (_, 44) => BASE64.decode(digest).map_err(|_| bad("base64"))?,
            (_, len) => {
                return Err(HashError::BadLength {
                    input: preview(input),
                    len,
                })
            }
        };
        // Every branch above yields exactly 32 bytes for its length, but check rather than trust.
        let digest: [u8; SHA256_LEN] = bytes.try_into().map_err(|_| bad("sha256 digest"))?;
        Ok(Self(digest))
    }
}

impl fmt::Display for NixHash {
    /// Renders `sha256:<nix-base32>`, the narinfo form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_base32())
    }
}

impl fmt::Debug for NixHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NixHash({self})")
    }
}

impl FromStr for NixHash {
    type Err = HashError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for NixHash {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NixHash {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A `Write` adapter that hashes and counts everything passed through it:
/// the NAR writer goes through one to learn `NarHash` and `NarSize` in the same pass.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`; use `io::sink()` to only hash.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been written yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Returns the inner writer, the hash and the byte count.
    pub fn finish(self) -> (W, NixHash, u64) {
        (self.inner, NixHash(self.hasher.finalize().into()), self.len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // sha256 of the NAR of a file holding "hello\n", as `nix path-info --json` printed it
    // (SRI) and as the narinfo `nix copy` wrote printed it (nix-base32).
    const SRI: &str = "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=";
    const NIX: &str = "sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw";

    #[test]
    fn sri_base32_and_hex_forms_agree_with_nix() {
        let a = NixHash::parse(SRI).unwrap();
        let b = NixHash::parse(NIX).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), NIX);
        assert_eq!(a.to_sri(), SRI);
        let hex = format!("sha256:{}", a.to_hex());
        assert_eq!(NixHash::parse(&hex).unwrap(), a);
        let b64 = format!("sha256:{}", a.to_base64());
        assert_eq!(NixHash::parse(&b64).unwrap(), a);
    }

    #[test]
    fn hashes_bytes_and_streams() {
        let empty = NixHash::of(b"");
        assert_eq!(
            empty.to_string(),
            "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        let mut w = HashingWriter::new(Vec::new());
        assert!(w.is_empty());
        w.write_all(b"hel").unwrap();
        w.write_all(b"lo").unwrap();
        assert_eq!(w.len(), 5);
        let (inner, hash, len) = w.finish();
        assert_eq!((inner.as_slice(), len), (&b"hello"[..], 5));
        assert_eq!(hash, NixHash::of(b"hello"));
    }

    #[test]
    fn serde_uses_the_narinfo_form() {
        let h = NixHash::parse(SRI).unwrap();
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{NIX}\""));
        assert_eq!(serde_json::from_str::<NixHash>(&json).unwrap(), h);
        assert!(serde_json::from_str::<NixHash>("\"md5:00\"").is_err());
    }

    #[test]
    fn rejects_bad_hashes() {
        assert!(matches!(
            NixHash::parse("04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw"),
            Err(HashError::MissingAlgorithm(_))
        ));
        assert!(matches!(
            NixHash::parse("md5:00112233445566778899aabbccddeeff"),
            Err(HashError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            NixHash::parse("sha256:abc"),
            Err(HashError::BadLength { len: 3, .. })
        ));
        // `e` is not in the nix-base32 alphabet.
        let e = format!("sha256:{}", "e".repeat(52));
        assert!(matches!(
            NixHash::parse(&e),
            Err(HashError::BadDigest {
                encoding: "nix-base32",
                ..
            })
        ));
        let g = format!("sha256:{}", "g".repeat(64));
        assert!(matches!(
            NixHash::parse(&g),
            Err(HashError::BadDigest {
                encoding: "hex",
                ..
            })
        ));
        // SRI never carries nix-base32 or hex.
        assert!(matches!(
            NixHash::parse(&NIX.replace(':', "-")),
            Err(HashError::BadLength { len: 52, .. })
        ));
        assert!(matches!(
            NixHash::parse("sha256-!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"),
            Err(HashError::BadDigest {
                encoding: "base64",
                ..
            })
        ));
        assert!(NixHash::parse("").is_err());
    }

    #[test]
    fn error_messages_are_bounded() {
        let huge = format!("sha256:{}", "0".repeat(100_000));
        let msg = NixHash::parse(&huge).unwrap_err().to_string();
        assert!(msg.len() < 400, "{}", msg.len());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics(s in "(sha256[:-])?[0-9a-zA-Z+/=]{0,70}|\\PC{0,70}") {
                if let Ok(h) = NixHash::parse(&s) {
                    prop_assert_eq!(NixHash::parse(&h.to_string()).unwrap(), h);
                }
            }

            #[test]
            fn every_form_round_trips(d in any::<[u8; 32]>()) {
                let h = NixHash::from_digest(d);
                for form in [h.to_string(), h.to_sri(), format!("sha256:{}", h.to_hex())] {
                    prop_assert_eq!(NixHash::parse(&form).unwrap(), h);
                }
            }
        }
    }
}
