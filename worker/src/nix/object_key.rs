//! Keys of the objects a cache holds, as the niks3 wire names them, and their types.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::compression::Compression;
use super::hash::NixHash;
use super::store_path::{is_name_char, StorePath, HASH_PART_LEN};
use super::{base32, preview};

/// Longest key accepted, in bytes: S3's limit is 1024 with the bucket prefix included,
/// and storage keeps 124 of them for the prefix.
pub const MAX_KEY_LEN: usize = 900;

/// Keys (exact) that the server writes and clients never may.
const SERVER_OWNED_FILES: &[&str] = &["nix-cache-info", "index.html"];
/// Key prefixes that the server writes and clients never may.
const SERVER_OWNED_PREFIXES: &[&str] = &["nix-cache-index/", "pins/"];

/// The kinds of object a client may upload, named as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectType {
    /// `<hash>.narinfo`
    Narinfo,
    /// `nar/<52 chars>.nar[.zst|.xz|.bz2]`
    Nar,
    /// `<hash>.ls`
    Listing,
    /// `log/<drv basename>`
    BuildLog,
    /// `realisations/<algo>:<digest>!<output>.doi`
    Realisation,
}

impl ObjectType {
    /// The wire name (`narinfo`, `nar`, `listing`, `build_log`, `realisation`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Narinfo => "narinfo",
            Self::Nar => "nar",
            Self::Listing => "listing",
            Self::BuildLog => "build_log",
            Self::Realisation => "realisation",
        }
    }
}

impl fmt::Display for ObjectType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a string is not a client-writable object key.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ObjectKeyError {
    #[error("object key is empty")]
    Empty,
    #[error("object key is {len} bytes long; at most {MAX_KEY_LEN} are allowed")]
    TooLong { len: usize },
    #[error("object key {0:?} contains a NUL byte")]
    Nul(String),
    #[error("object key {0:?} contains percent-encoding, which keys never need")]
    PercentEncoded(String),
    #[error("object key {0:?} is absolute or has a `..` or empty path segment")]
    Traversal(String),
    #[error(
        "object key {0:?} has a path segment starting with `.`, which storage keeps for itself"
    )]
    HiddenSegment(String),
    #[error("object key {0:?} belongs to the server and is never client-writable")]
    ServerOwned(String),
    #[error("object key {0:?} matches none of the narinfo, nar, listing, build_log or realisation patterns")]
    Unrecognised(String),
    #[error("object key {key:?} is a {actual} key, not a {expected} key")]
    TypeMismatch {
        key: String,
        expected: ObjectType,
        actual: ObjectType,
    },
    #[error("store path {0:?} is not a derivation, so it has no build log key")]
    NotDerivation(String),
}

/// Whether the server alone writes `key` (`nix-cache-info`, the index files, pins).
pub fn is_server_owned(key: &str) -> bool {
    SERVER_OWNED_FILES.contains(&key) || SERVER_OWNED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A validated object key and the type its shape implies.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    key: String,
    kind: ObjectType,
}

impl ObjectKey {
    /// Validates a key and infers its type from its shape.
    pub fn parse(key: &str) -> Result<Self, ObjectKeyError> {
        check_safe(key)?;
        if is_server_owned(key) {
            return Err(ObjectKeyError::ServerOwned(preview(key)));
        }
        let kind = classify(key).ok_or_else(|| ObjectKeyError::Unrecognised(preview(key)))?;
        Ok(Self {
            key: key.to_owned(),
            kind,
        })
    }

    /// Validates a key that a client declared to be of type `expected`.
    pub fn parse_as(key: &str, expected: ObjectType) -> Result<Self, ObjectKeyError> {
        let parsed = Self::parse(key)?;
        if parsed.kind != expected {
            return Err(ObjectKeyError::TypeMismatch {
                key: preview(key),
                expected,
                actual: parsed.kind,
            });
        }
        Ok(parsed)
    }

    /// `<hash>.narinfo` of a store path.
    pub fn narinfo(path: &StorePath) -> Self {
        Self {
            key: format!("{}.narinfo", path.hash_part()),
            kind: ObjectType::Narinfo,
        }
    }

    /// `<hash>.ls` of a store path.
    pub fn listing(path: &StorePath) -> Self {
        Self {
            key: format!("{}.ls", path.hash_part()),
            kind: ObjectType::Listing,
        }
    }

    /// `nar/<base32 hash>.nar<ext>`, named by whichever hash the uploader chose
    /// (niks3 uses the NarHash, Nix the FileHash).
    pub fn nar(hash: &NixHash, compression: Compression) -> Self {
        Self {
            key: format!("nar/{}.nar{}", hash.to_base32(), compression.extension()),
            kind: ObjectType::Nar,
        }
    }

    /// `log/<drv basename>` for a derivation.
    pub fn build_log(drv: &StorePath) -> Result<Self, ObjectKeyError> {
        if !drv.is_derivation() {
            return Err(ObjectKeyError::NotDerivation(drv.to_string()));
        }
        Ok(Self {
            key: format!("log/{}", drv.basename()),
            kind: ObjectType::BuildLog,
        })
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.key
    }

    /// The key's type.
    pub fn object_type(&self) -> ObjectType {
        self.kind
    }

    /// The store path hash part a narinfo or listing key is named by.
    pub fn hash_part(&self) -> Option<&str> {
        match self.kind {
            ObjectType::Narinfo | ObjectType::Listing => Some(&self.key[..HASH_PART_LEN]),
            _ => None,
        }
    }

    /// The compression a NAR key's extension names.
    pub fn compression(&self) -> Option<Compression> {
        if self.kind != ObjectType::Nar {
            return None;
        }
        let ext = &self.key["nar/".len() + 52 + ".nar".len()..];
        Compression::from_extension(ext)
    }

    /// Gives the key text back.
    pub fn into_string(self) -> String {
        self.key
    }
}

/// Rejects what no key of any type may contain, before looking at the shape.
fn check_safe(key: &str) -> Result<(), ObjectKeyError> {
    if key.is_empty() {
        return Err(ObjectKeyError::Empty);
    }
    if key.len() > MAX_KEY_LEN {
        return Err(ObjectKeyError::TooLong { len: key.len() });
    }
    if key.contains('\0') {
        return Err(ObjectKeyError::Nul(preview(key)));
    }
    if key.contains('%') {
        return Err(ObjectKeyError::PercentEncoded(preview(key)));
    }
    // Only whole `..` segments traverse: `hm_..zlogout.drv` is a legal name.
    if key.starts_with('/') || key.split('/').any(|seg| seg == ".." || seg.is_empty()) {
        return Err(ObjectKeyError::Traversal(preview(key)));
    }
    // niks3's patterns allow a build log named `.x`, but the directory backend keeps its
    // temporary files under such names, so no backend stores one. Real keys never start
    // a segment with `.`: store path names cannot, and log names start with a hash.
    if key.split('/').any(|seg| seg.starts_with('.')) {
        return Err(ObjectKeyError::HiddenSegment(preview(key)));
    }
    Ok(())
}

fn is_base32(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|c| base32::char_value(c).is_some())
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_name_char)
}

/// The type whose pattern `key` matches, if any.
fn classify(key: &str) -> Option<ObjectType> {
    if let Some(hash) = key.strip_suffix(".narinfo") {
        return is_base32(hash, HASH_PART_LEN).then_some(ObjectType::Narinfo);
    }
    if let Some(hash) = key.strip_suffix(".ls") {
        return is_base32(hash, HASH_PART_LEN).then_some(ObjectType::Listing);
    }
    if let Some(rest) = key.strip_prefix("nar/") {
        let (hash, ext) = rest.split_at_checked(52)?;
        let ext = ext.strip_prefix(".nar")?;
        return (is_base32(hash, 52) && Compression::from_extension(ext).is_some())
            .then_some(ObjectType::Nar);
    }
    if let Some(rest) = key.strip_prefix("log/") {
        let stem = rest.strip_suffix(".drv")?;
        return is_name(stem).then_some(ObjectType::BuildLog);
    }
    if let Some(rest) = key.strip_prefix("realisations/") {
        let id = rest.strip_suffix(".doi")?;
        let (algo, rest) = id.split_once(':')?;
        let (digest, output) = rest.split_once('!')?;
        let algo_ok = !algo.is_empty()
            && algo
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let digest_ok = !digest.is_empty()
            && digest
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/' | b'='));
        return (algo_ok && digest_ok && is_name(output)).then_some(ObjectType::Realisation);
    }
    None
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key)
    }
}

impl fmt::Debug for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectKey({}: {})", self.kind, self.key)
    }
}

impl FromStr for ObjectKey {
    type Err = ObjectKeyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for ObjectKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.key)
    }
}

impl<'de> Deserialize<'de> for ObjectKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ObjectType::*;

    const H32: &str = "26xbg1ndr7hbcncrlf9nhx5is2b25d13";
    const H52: &str = "1ngi2dxw1f7khrrjamzkkdai393lwcm8s78gvs1ag8k3n82w7bvp";

    fn kind(key: &str) -> Result<ObjectType, ObjectKeyError> {
        ObjectKey::parse(key).map(|k| k.object_type())
    }

    #[test]
    fn classifies_every_type() {
        assert_eq!(kind(&format!("{H32}.narinfo")), Ok(Narinfo));
        assert_eq!(kind(&format!("{H32}.ls")), Ok(Listing));
        for ext in ["", ".zst", ".xz", ".bz2"] {
            assert_eq!(kind(&format!("nar/{H52}.nar{ext}")), Ok(Nar), "{ext}");
        }
        assert_eq!(kind("log/abcd1234-hello-1.0.drv"), Ok(BuildLog));
        // `..` inside a name is legal.
        assert_eq!(kind("log/abcd1234-hm_..zlogout.drv"), Ok(BuildLog));
        assert_eq!(kind("realisations/sha256:abc123!out.doi"), Ok(Realisation));
        assert_eq!(
            kind(&format!("realisations/sha256:{}!dev.doi", "0".repeat(64))),
            Ok(Realisation)
        );
    }

    #[test]
    fn rejects_unsafe_keys() {
        use ObjectKeyError::*;
        assert_eq!(kind(""), Err(Empty));
        assert!(matches!(
            kind(&"a".repeat(MAX_KEY_LEN + 1)),
            Err(TooLong { .. })
        ));
        assert!(matches!(kind(&format!("{H32}\0.narinfo")), Err(Nul(_))));
        for key in [
            "../etc/passwd",
            "nar/../../secrets",
            "log/..",
            "..",
            "/26xbg1ndr7hbcncrlf9nhx5is2b25d13.narinfo",
            "log//a.drv",
            "realisations/sha256:a/../b!out.doi",
            "realisations/sha256:a//b!out.doi",
            "log/",
        ] {
            assert!(matches!(kind(key), Err(Traversal(_))), "{key}");
        }
        // Storage keeps `.`-names for itself (a departure from niks3's log pattern).
        for key in [
            "log/..zlogout.drv",
            "log/.x.drv",
            "log/.drv",
            "log/.hidden/a.drv",
        ] {
            assert!(matches!(kind(key), Err(HiddenSegment(_))), "{key}");
        }
        for key in ["nar/%2e%2e/x", "log/%2E%2E%2Fa.drv", "log/a%00.drv"] {
            assert!(matches!(kind(key), Err(PercentEncoded(_))), "{key}");
        }
    }

    #[test]
    fn server_owned_keys_are_never_writable() {
        for key in [
            "nix-cache-info",
            "index.html",
            "nix-cache-index/manifest.json",
            "pins/release",
        ] {
            assert!(is_server_owned(key));
            assert!(
                matches!(kind(key), Err(ObjectKeyError::ServerOwned(_))),
                "{key}"
            );
        }
        assert!(!is_server_owned(&format!("{H32}.narinfo")));
    }

    #[test]
    fn rejects_near_misses() {
        let bad = [
            format!("{}.narinfo", &H32[1..]),
            format!("{H32}x.narinfo"),
            format!("{}.narinfo", "e".repeat(32)),
            format!("{}.narinfo", H32.to_uppercase()),
            format!("{H32}.ls.zst"),
            format!("nar/{H52}.nar.gz"),
            format!("nar/{H52}"),
            format!("nar/{H32}.nar"),
            format!("nar/{H52}.nar.zst/x"),
            "log/a.txt".into(),
            "log/a b.drv".into(),
            "log/sub/a.drv".into(),
            "realisations/sha256:abc!out".into(),
            "realisations/:abc!out.doi".into(),
            "realisations/SHA256:abc!out.doi".into(),
            "realisations/sha256:!out.doi".into(),
            "realisations/sha256:abc!.doi".into(),
            "realisations/sha256:abc.doi".into(),
            "realisations/sha256:a-c!out.doi".into(),
            "hello".into(),
        ];
        for key in bad {
            assert!(
                matches!(kind(&key), Err(ObjectKeyError::Unrecognised(_))),
                "{key}: {:?}",
                kind(&key)
            );
        }
    }

    #[test]
    fn parse_as_checks_the_declared_type() {
        let key = format!("{H32}.narinfo");
        assert!(ObjectKey::parse_as(&key, Narinfo).is_ok());
        assert_eq!(
            ObjectKey::parse_as(&key, Nar),
            Err(ObjectKeyError::TypeMismatch {
                key: key.clone(),
                expected: Nar,
                actual: Narinfo
            })
        );
        assert!(ObjectKey::parse_as("nix-cache-info", Narinfo).is_err());
    }

    #[test]
    fn builds_keys_from_paths_and_hashes() {
        let p = StorePath::from_basename(&format!("{H32}-hello-1.0")).unwrap();
        let ni = ObjectKey::narinfo(&p);
        assert_eq!(ni.as_str(), format!("{H32}.narinfo"));
        assert_eq!(ni.hash_part(), Some(H32));
        assert_eq!(ObjectKey::parse(ni.as_str()).unwrap(), ni);
        let ls = ObjectKey::listing(&p);
        assert_eq!(ls.as_str(), format!("{H32}.ls"));
        assert_eq!(ObjectKey::parse(ls.as_str()).unwrap(), ls);

        let h = NixHash::of(b"x");
        let nar = ObjectKey::nar(&h, Compression::Zstd);
        assert_eq!(nar.as_str(), format!("nar/{}.nar.zst", h.to_base32()));
        assert_eq!(nar.compression(), Some(Compression::Zstd));
        assert_eq!(nar.hash_part(), None);
        assert_eq!(ObjectKey::parse(nar.as_str()).unwrap(), nar);
        assert_eq!(ni.compression(), None);

        let drv = StorePath::from_basename(&format!("{H32}-hm_..zlogout.drv")).unwrap();
        let log = ObjectKey::build_log(&drv).unwrap();
        assert_eq!(log.as_str(), format!("log/{H32}-hm_..zlogout.drv"));
        assert_eq!(ObjectKey::parse(log.as_str()).unwrap(), log);
        assert!(matches!(
            ObjectKey::build_log(&p),
            Err(ObjectKeyError::NotDerivation(_))
        ));
        assert_eq!(log.clone().into_string(), log.to_string());
    }

    #[test]
    fn serde_names_match_the_wire() {
        let names: Vec<String> = [Narinfo, Nar, Listing, BuildLog, Realisation]
            .iter()
            .map(|t| serde_json::to_string(t).unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "\"narinfo\"",
                "\"nar\"",
                "\"listing\"",
                "\"build_log\"",
                "\"realisation\""
            ]
        );
        for t in [Narinfo, Nar, Listing, BuildLog, Realisation] {
            assert_eq!(format!("\"{t}\""), serde_json::to_string(&t).unwrap());
        }
        let key: ObjectKey = serde_json::from_str(&format!("\"{H32}.ls\"")).unwrap();
        assert_eq!(key.object_type(), Listing);
        assert!(serde_json::from_str::<ObjectKey>("\"../x\"").is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_and_accepted_keys_are_safe(key in "[a-z0-9./:!%_=+-]{0,80}|\\PC{0,40}") {
                if let Ok(k) = ObjectKey::parse(&key) {
                    prop_assert!(!k.as_str().starts_with('/'));
                    prop_assert!(!k.as_str().split('/').any(|s| s == ".." || s.is_empty()));
                    prop_assert!(!is_server_owned(k.as_str()));
                    prop_assert_eq!(ObjectKey::parse_as(&key, k.object_type()).unwrap(), k);
                }
            }

            #[test]
            fn near_valid_keys_never_panic(prefix in "(nar/|log/|realisations/)?", body in "[0-9a-z]{0,60}", suffix in "(\\.narinfo|\\.ls|\\.nar(\\.zst)?|\\.drv|!out\\.doi)?") {
                let _ = ObjectKey::parse(&format!("{prefix}{body}{suffix}"));
            }
        }
    }
}
