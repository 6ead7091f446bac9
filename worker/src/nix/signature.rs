//! Ed25519 keys and signatures in Nix's `name:base64` form, and the narinfo fingerprint.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use getrandom::rand_core::CryptoRng;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::hash::NixHash;
use super::preview;
use super::store_path::StorePath;

/// Longest key name accepted; Nix sets none, but names are short labels like `cache.example.org-1`.
pub const MAX_KEY_NAME_LEN: usize = 256;

/// Why a key or signature string is unusable.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum SignatureError {
    #[error("{what} {input:?} is not `name:base64`")]
    NoName { what: &'static str, input: String },
    #[error("{what} name {name:?} {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("{what} named {name:?} is not valid base64")]
    BadBase64 { what: &'static str, name: String },
    #[error("{what} named {name:?} is {len} bytes; expected {expected}")]
    BadLength {
        what: &'static str,
        name: String,
        len: usize,
        expected: &'static str,
    },
    #[error("secret key {name:?}: its public half does not belong to its seed")]
    KeyMismatch { name: String },
    #[error("public key {name:?} is not a valid Ed25519 point")]
    BadPublicKey { name: String },
}

/// Splits `name:base64` and decodes the payload.
fn split(what: &'static str, input: &str) -> Result<(String, Vec<u8>), SignatureError> {
    let (name, payload) = input
        .split_once(':')
        .ok_or_else(|| SignatureError::NoName {
            what,
            input: what_preview(what, input),
        })?;
    if let Some(why) = name_problem(name) {
        return Err(SignatureError::BadName {
            what,
            name: preview(name),
            why,
        });
    }
    let bytes = BASE64
        .decode(payload)
        .map_err(|_| SignatureError::BadBase64 {
            what,
            name: name.to_owned(),
        })?;
    Ok((name.to_owned(), bytes))
}

/// Never echo a secret key back in an error.
fn what_preview(what: &str, input: &str) -> String {
    if what == "secret key" {
        "<redacted>".into()
    } else {
        preview(input)
    }
}

/// The string Nix signs for a store path: `1;<path>;<narHash>;<narSize>;<refs,sorted>`.
pub fn fingerprint(
    path: &StorePath,
    nar_hash: &NixHash,
    nar_size: u64,
    references: &[StorePath],
) -> String {
    let mut refs: Vec<String> = references.iter().map(StorePath::to_absolute).collect();
    refs.sort();
    refs.dedup();
    format!("1;{path};{nar_hash};{nar_size};{}", refs.join(","))
}

/// A signing key: `name:base64(seed ‖ public)` as `nix key generate-secret` writes it.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses `name:base64` of 64 bytes (seed ‖ public key) or of the 32-byte seed.
    pub fn parse(input: &str) -> Result<Self, SignatureError> {
        let what = "secret key";
        let (name, bytes) = split(what, input.trim())?;
        let key = match bytes.len() {
            32 => {
                let mut seed = [0u8; 32];
                seed.copy_from_slice(&bytes);
                SigningKey::from_bytes(&seed)
            }
            64 => {
                let mut pair = [0u8; 64];
                pair.copy_from_slice(&bytes);
                SigningKey::from_keypair_bytes(&pair)
                    .map_err(|_| SignatureError::KeyMismatch { name: name.clone() })?
            }
            len => {
                return Err(SignatureError::BadLength {
                    what,
                    name,
                    len,
                    expected: "64 (seed and public key) or 32 (seed)",
                })
            }
        };
        Ok(Self { name, key })
    }

    /// A key from a 32-byte seed.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, SignatureError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// A fresh key; pass `&mut getrandom::rand_core::UnwrapErr(getrandom::SysRng)`.
    pub fn generate<R: CryptoRng + ?Sized>(
        name: &str,
        rng: &mut R,
    ) -> Result<Self, SignatureError> {
        check_name(name)?;
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::generate(rng),
        })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching public key.
    pub fn public_key(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The 64-byte form Nix writes, `name:base64(seed ‖ public)`; handle with care.
    pub fn to_nix_string(&self) -> String {
        format!(
            "{}:{}",
            self.name,
            BASE64.encode(self.key.to_keypair_bytes())
        )
    }

    /// Signs a fingerprint (Ed25519 is deterministic: same key and text, same signature).
    pub fn sign(&self, fingerprint: &str) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(fingerprint.as_bytes()).to_bytes(),
        }
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey({}: <redacted>)", self.name)
    }
}

fn check_name(name: &str) -> Result<(), SignatureError> {
    let why = if name.contains(':') {
        // `name:base64` would split at the first colon.
        Some("has a ':', which ends a key's name")
    } else {
        name_problem(name)
    };
    match why {
        Some(why) => Err(SignatureError::BadName {
            what: "key",
            name: preview(name),
            why,
        }),
        None => Ok(()),
    }
}

/// What is wrong with a key name, if anything.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.len() > MAX_KEY_NAME_LEN {
        Some("is longer than 256 bytes")
    } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("has whitespace or control characters")
    } else {
        None
    }
}

/// A verifying key: `name:base64(32 bytes)`.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64` of 32 bytes.
    pub fn parse(input: &str) -> Result<Self, SignatureError> {
        let what = "public key";
        let (name, bytes) = split(what, input.trim())?;
        let raw: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| SignatureError::BadLength {
                what,
                name: name.clone(),
                len: bytes.len(),
                expected: "32",
            })?;
        let key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| SignatureError::BadPublicKey { name: name.clone() })?;
        Ok(Self { name, key })
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether `sig` was made by this key's name and key over `fingerprint`.
    pub fn verify(&self, fingerprint: &str, sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify_strict(
                    fingerprint.as_bytes(),
                    &ed25519_dalek::Signature::from_bytes(&sig.bytes),
                )
                .is_ok()
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

impl FromStr for PublicKey {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A narinfo `Sig`: `keyname:base64(64-byte Ed25519 signature)`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// Parses `keyname:base64` of 64 bytes.
    pub fn parse(input: &str) -> Result<Self, SignatureError> {
        let what = "signature";
        let (key_name, bytes) = split(what, input)?;
        let bytes: [u8; 64] =
            bytes
                .as_slice()
                .try_into()
                .map_err(|_| SignatureError::BadLength {
                    what,
                    name: key_name.clone(),
                    len: bytes.len(),
                    expected: "64",
                })?;
        Ok(Self { key_name, bytes })
    }

    /// Name of the key that made it.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The raw signature.
    pub fn bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

impl FromStr for Signature {
    type Err = SignatureError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made with Nix 2.8 on this project's machine:
    //   nix key generate-secret --key-name test-1
    //   nix key convert-secret-to-public
    const SECRET: &str = "test-1:p1lSmHX5B7rU++pc3DrCDuLCbZtQOn2JEETFjp8IuakRad8VpFi/7TSsf/IS16ZgE0iQy/dXFeisewvpC1FHpQ==";
    const PUBLIC: &str = "test-1:EWnfFaRYv+00rH/yEtemYBNIkMv3VxXorHsL6QtRR6U=";

    // `nix store sign --key-file` on a path made with builtins.toFile that refers to two
    // others, then `nix path-info --json`: its narHash, narSize, references and signature.
    const PATH: &str = "/nix/store/x7nmn0jylwzcda035v787lpja0mnb6sa-with-refs";
    const NAR_HASH: &str = "sha256-0OvBC+ifAFEImNTMaIO4Ducfq224pRUBtEPo3OclGw4=";
    const NAR_SIZE: u64 = 224;
    const REF_B: &str = "/nix/store/h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt";
    const REF_A: &str = "/nix/store/mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt";
    const SIG: &str = "test-1:3luLeDGd3VvF8hrARR3zPyVQbfeHMEM6caN5WMW0Sajl43X93yE/mfKsCcD6Qlwl76pba8vd40nsnju3M3GdAA==";

    // Same for a path with no references (`nix-store --add` of "hello\n").
    const PATH0: &str = "/nix/store/i9pmrzmpshapij2kin22pff6fc2adavx-hello.txt";
    const NAR_HASH0: &str = "sha256-HDfQGvQL4ugGkd48w99EN3ppmvuxfGjwgJZLL9Bx/BM=";
    const SIG0: &str = "test-1:bBJUctecSCdOCi5XSqf3adbVZy2tXbvIeu1Rdofdi/mHDAiVnD5XwYX0oEsVBMEPZc3DHrUq/mhLWHaIlUzaBg==";

    fn sp(s: &str) -> StorePath {
        StorePath::parse(s).unwrap()
    }

    fn nix_fingerprint() -> String {
        // References given out of order: the fingerprint sorts them.
        fingerprint(
            &sp(PATH),
            &NixHash::parse(NAR_HASH).unwrap(),
            NAR_SIZE,
            &[sp(REF_A), sp(REF_B)],
        )
    }

    #[test]
    fn secret_key_from_nix_gives_nix_public_key() {
        let sk = SecretKey::parse(SECRET).unwrap();
        assert_eq!(sk.name(), "test-1");
        assert_eq!(sk.public_key().to_string(), PUBLIC);
        assert_eq!(sk.to_nix_string(), SECRET);
        // Trailing newline as in a key file is fine.
        assert_eq!(
            SecretKey::parse(&format!("{SECRET}\n"))
                .unwrap()
                .to_nix_string(),
            SECRET
        );
    }

    #[test]
    fn fingerprint_is_nix_format() {
        assert_eq!(
            nix_fingerprint(),
            format!("1;{PATH};sha256:03hv4pkxrs23nh0ib9dqdnmizrqfp21nik6lk045204zx05w3syh;224;{REF_B},{REF_A}")
        );
        let empty = fingerprint(&sp(PATH0), &NixHash::parse(NAR_HASH0).unwrap(), 120, &[]);
        assert_eq!(
            empty,
            format!("1;{PATH0};sha256:04zwf782yjwnh3q6hz5izfd6jyip8kgw6g6yj43fiqhbyhdd0dqw;120;")
        );
    }

    #[test]
    fn signatures_match_what_nix_made() {
        let sk = SecretKey::parse(SECRET).unwrap();
        assert_eq!(sk.sign(&nix_fingerprint()).to_string(), SIG);
        let fp0 = fingerprint(&sp(PATH0), &NixHash::parse(NAR_HASH0).unwrap(), 120, &[]);
        assert_eq!(sk.sign(&fp0).to_string(), SIG0);

        let pk = PublicKey::parse(PUBLIC).unwrap();
        assert!(pk.verify(&nix_fingerprint(), &Signature::parse(SIG).unwrap()));
        assert!(pk.verify(&fp0, &Signature::parse(SIG0).unwrap()));
        // Wrong text, or a signature by another key name, does not verify.
        assert!(!pk.verify(&fp0, &Signature::parse(SIG).unwrap()));
        let renamed = Signature::parse(&SIG.replace("test-1", "test-2")).unwrap();
        assert!(!pk.verify(&nix_fingerprint(), &renamed));
    }

    #[test]
    fn seed_only_secret_keys_are_accepted() {
        let sk = SecretKey::parse(SECRET).unwrap();
        let pair = BASE64.decode(SECRET.split_once(':').unwrap().1).unwrap();
        let seed_only = format!("test-1:{}", BASE64.encode(&pair[..32]));
        let sk32 = SecretKey::parse(&seed_only).unwrap();
        assert_eq!(sk32.public_key(), sk.public_key());
        assert_eq!(sk32.to_nix_string(), SECRET);
        let seed: [u8; 32] = pair[..32].try_into().unwrap();
        assert_eq!(
            SecretKey::from_seed("test-1", seed)
                .unwrap()
                .to_nix_string(),
            SECRET
        );
    }

    #[test]
    fn generated_keys_sign_and_verify() {
        let mut rng = getrandom::rand_core::UnwrapErr(getrandom::SysRng);
        let a = SecretKey::generate("cache.example.org-1", &mut rng).unwrap();
        let b = SecretKey::generate("cache.example.org-1", &mut rng).unwrap();
        assert_ne!(a.to_nix_string(), b.to_nix_string());
        let again = SecretKey::parse(&a.to_nix_string()).unwrap();
        let sig = again.sign("1;x");
        assert!(a.public_key().verify("1;x", &sig));
        assert!(!b.public_key().verify("1;x", &sig));
        assert!(SecretKey::generate("bad name", &mut rng).is_err());
        assert!(SecretKey::generate("", &mut rng).is_err());
    }

    #[test]
    fn rejects_bad_keys_and_signatures() {
        use SignatureError::*;
        assert!(matches!(SecretKey::parse("nocolon"), Err(NoName { .. })));
        assert!(matches!(SecretKey::parse(":AAAA"), Err(BadName { .. })));
        assert!(matches!(SecretKey::parse("a b:AAAA"), Err(BadName { .. })));
        for (name, why) in [
            ("", "is empty"),
            ("a b", "whitespace"),
            ("a:b", "':'"),
            (&"n".repeat(257), "longer"),
        ] {
            let e = SecretKey::from_seed(name, [7; 32]).unwrap_err().to_string();
            assert!(e.contains(why), "{name}: {e}");
        }
        assert!(matches!(
            SecretKey::parse("k:not base64!"),
            Err(BadBase64 { .. })
        ));
        assert!(matches!(
            SecretKey::parse("k:AAAA"),
            Err(BadLength { len: 3, .. })
        ));
        // A 64-byte key whose public half belongs to another seed.
        let pair = BASE64.decode(SECRET.split_once(':').unwrap().1).unwrap();
        let mut bad = pair.clone();
        bad[40] ^= 1;
        assert!(matches!(
            SecretKey::parse(&format!("k:{}", BASE64.encode(&bad))),
            Err(KeyMismatch { .. })
        ));
        assert!(matches!(
            PublicKey::parse("k:AAAA"),
            Err(BadLength { len: 3, .. })
        ));
        assert!(matches!(
            PublicKey::parse(&format!("k:{}", BASE64.encode(&pair[..31]))),
            Err(BadLength { len: 31, .. })
        ));
        assert!(matches!(
            Signature::parse("k:AAAA"),
            Err(BadLength { len: 3, .. })
        ));
        assert!(matches!(Signature::parse("AAAA"), Err(NoName { .. })));
    }

    #[test]
    fn secrets_never_show_in_errors_or_debug() {
        let sk = SecretKey::parse(SECRET).unwrap();
        let payload = SECRET.split_once(':').unwrap().1;
        assert!(!format!("{sk:?}").contains(payload));
        let e = SecretKey::parse(payload).unwrap_err().to_string();
        assert!(!e.contains(&payload[..20]), "{e}");
    }

    #[test]
    fn serde_uses_nix_strings() {
        let sig = Signature::parse(SIG).unwrap();
        let json = serde_json::to_string(&sig).unwrap();
        assert_eq!(json, format!("\"{SIG}\""));
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), sig);
        let pk = PublicKey::parse(PUBLIC).unwrap();
        assert_eq!(serde_json::to_string(&pk).unwrap(), format!("\"{PUBLIC}\""));
        assert_eq!(sig.key_name(), "test-1");
        assert_eq!(sig.bytes().len(), 64);
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn parsers_never_panic(s in "\\PC{0,120}") {
                let _ = SecretKey::parse(&s);
                let _ = PublicKey::parse(&s);
                let _ = Signature::parse(&s);
            }

            #[test]
            fn any_payload_length_is_handled(name in "[a-z0-9.-]{0,12}", bytes in proptest::collection::vec(any::<u8>(), 0..100)) {
                let s = format!("{name}:{}", BASE64.encode(&bytes));
                let sk = SecretKey::parse(&s);
                let pk = PublicKey::parse(&s);
                let sig = Signature::parse(&s);
                prop_assert!(sig.is_ok() == (!name.is_empty() && bytes.len() == 64));
                prop_assert!(pk.is_err() || bytes.len() == 32);
                prop_assert!(sk.is_err() || bytes.len() == 32 || bytes.len() == 64);
            }

            #[test]
            fn sign_then_verify_for_any_seed_and_text(seed in any::<[u8; 32]>(), text in "\\PC{0,80}") {
                let sk = SecretKey::from_seed("k-1", seed).unwrap();
                let sig = sk.sign(&text);
                prop_assert!(sk.public_key().verify(&text, &sig));
                let other = format!("{text}x");
                prop_assert!(!sk.public_key().verify(&other, &sig));
                let sk2 = SecretKey::parse(&sk.to_nix_string()).unwrap();
                prop_assert_eq!(sk2.public_key(), sk.public_key());
            }
        }
    }
}
