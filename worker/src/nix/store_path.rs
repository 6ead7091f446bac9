//! Store paths: `/nix/store/<32 nix-base32 chars>-<name>`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use super::{base32, preview};

/// The only store directory Larder serves.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the hash part of a store path basename.
pub const HASH_PART_LEN: usize = 32;

/// Longest name Nix accepts after `<hash>-`.
pub const MAX_NAME_LEN: usize = 211;

/// Why a string is not a valid store path.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StorePathError {
    #[error("path {0:?} is not directly inside {STORE_DIR}")]
    NotInStore(String),
    #[error("store path basename {0:?} is not `<32-char hash>-<name>`")]
    NoName(String),
    #[error("store path hash part {0:?} is not 32 nix-base32 characters")]
    BadHashPart(String),
    #[error("store path name is empty")]
    EmptyName,
    #[error("store path name {name:?} is {len} bytes long; at most {MAX_NAME_LEN} are allowed")]
    NameTooLong { name: String, len: usize },
    #[error("store path name {name:?} contains {c:?}; allowed are a-z A-Z 0-9 + - . _ ? =")]
    BadNameChar { name: String, c: char },
    #[error("store path name {0:?} is reserved (`.`, `..`, or starting `.-` / `..-`)")]
    ReservedName(String),
}

/// Whether `c` may appear in a store path name (Nix's `[a-zA-Z0-9+\-._?=]`).
pub const fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.' | b'_' | b'?' | b'=')
}

/// Checks the 32-character hash part of a basename.
pub fn validate_hash_part(hash: &str) -> Result<(), StorePathError> {
    if hash.len() == HASH_PART_LEN && hash.bytes().all(|c| base32::char_value(c).is_some()) {
        Ok(())
    } else {
        Err(StorePathError::BadHashPart(preview(hash)))
    }
}

/// Checks a store path name the way current Nix does.
///
/// Leading periods are allowed (Nix has officially accepted them since 2.20 and
/// accidentally since 2.4); only `.`, `..` and names starting `.-` or `..-` are not.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong {
            name: preview(name),
            len: name.len(),
        });
    }
    if let Some(c) = name
        .chars()
        .find(|&c| !c.is_ascii() || !is_name_char(c as u8))
    {
        return Err(StorePathError::BadNameChar {
            name: preview(name),
            c,
        });
    }
    let reserved = name == "." || name == ".." || name.starts_with(".-") || name.starts_with("..-");
    if reserved {
        return Err(StorePathError::ReservedName(name.to_owned()));
    }
    Ok(())
}

/// A validated store path; compares and sorts like its full path string.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StorePath {
    basename: String,
}

impl StorePath {
    /// Parses an absolute store path such as `/nix/store/<hash>-hello-2.12`.
    pub fn parse(path: &str) -> Result<Self, StorePathError> {
        let basename = path
            .strip_prefix(STORE_DIR)
            .and_then(|rest| rest.strip_prefix('/'))
            .ok_or_else(|| StorePathError::NotInStore(preview(path)))?;
        Self::from_basename(basename)
    }

    /// Parses a basename such as `<hash>-hello-2.12` (the form narinfo `References` use).
    pub fn from_basename(basename: &str) -> Result<Self, StorePathError> {
        let (hash, name) = match basename.split_at_checked(HASH_PART_LEN) {
            Some((hash, rest)) => match rest.strip_prefix('-') {
                Some(name) => (hash, name),
                None => return Err(StorePathError::NoName(preview(basename))),
            },
            None => return Err(StorePathError::NoName(preview(basename))),
        };
        validate_hash_part(hash)?;
        validate_name(name)?;
        Ok(Self {
            basename: basename.to_owned(),
        })
    }

    /// `<hash>-<name>`.
    pub fn basename(&self) -> &str {
        &self.basename
    }

    /// The 32-character hash part, which names the path's narinfo.
    pub fn hash_part(&self) -> &str {
        &self.basename[..HASH_PART_LEN]
    }

    /// The name after `<hash>-`.
    pub fn name(&self) -> &str {
        &self.basename[HASH_PART_LEN + 1..]
    }

    /// Whether this is a derivation (`*.drv`), whose build log a cache may hold.
    pub fn is_derivation(&self) -> bool {
        self.name().ends_with(".drv")
    }

    /// The absolute path, `/nix/store/<hash>-<name>`.
    pub fn to_absolute(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}", self.basename)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl FromStr for StorePath {
    type Err = StorePathError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl Serialize for StorePath {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for StorePath {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "x7nmn0jylwzcda035v787lpja0mnb6sa";

    #[test]
    fn parses_and_exposes_parts() {
        let p = StorePath::parse(&format!("/nix/store/{HASH}-hello-2.12.1")).unwrap();
        assert_eq!(p.hash_part(), HASH);
        assert_eq!(p.name(), "hello-2.12.1");
        assert_eq!(p.basename(), format!("{HASH}-hello-2.12.1"));
        assert_eq!(p.to_absolute(), format!("/nix/store/{HASH}-hello-2.12.1"));
        assert_eq!(StorePath::from_basename(p.basename()).unwrap(), p);
        assert!(!p.is_derivation());
        let drv = StorePath::from_basename(&format!("{HASH}-hm_..zlogout.drv")).unwrap();
        assert!(drv.is_derivation());
    }

    #[test]
    fn accepts_every_allowed_character_and_the_longest_name() {
        let name = "aZ09+-._?=";
        assert!(StorePath::from_basename(&format!("{HASH}-{name}")).is_ok());
        let long = "a".repeat(MAX_NAME_LEN);
        assert!(StorePath::from_basename(&format!("{HASH}-{long}")).is_ok());
        // Leading periods are legal in current Nix, e.g. a home-manager dotfile.
        assert!(StorePath::from_basename(&format!("{HASH}-.zshrc")).is_ok());
        assert!(StorePath::from_basename(&format!("{HASH}-..a")).is_ok());
    }

    #[test]
    fn rejects_bad_paths() {
        use StorePathError::*;
        let bad = |s: &str| StorePath::parse(s).unwrap_err();
        assert!(matches!(bad("/usr/bin/env"), NotInStore(_)));
        assert!(matches!(bad(&format!("/nix/store{HASH}-a")), NotInStore(_)));
        assert!(matches!(bad(&format!("nix/store/{HASH}-a")), NotInStore(_)));
        assert!(matches!(bad(&format!("/nix/store/{HASH}")), NoName(_)));
        assert!(matches!(bad(&format!("/nix/store/{HASH}_a")), NoName(_)));
        assert!(matches!(
            bad("/nix/store/abc-a"),
            NoName(_) | BadHashPart(_)
        ));
        assert!(matches!(bad("/nix/store/"), NoName(_)));
        let e_hash = "e".repeat(32);
        assert!(matches!(
            bad(&format!("/nix/store/{e_hash}-a")),
            BadHashPart(_)
        ));
        assert_eq!(bad(&format!("/nix/store/{HASH}-")), EmptyName);
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert!(matches!(
            bad(&format!("/nix/store/{HASH}-{long}")),
            NameTooLong { len: 212, .. }
        ));
        for c in ['/', ' ', '!', '%', '\n', '\0', 'é', '~'] {
            let e = bad(&format!("/nix/store/{HASH}-a{c}b"));
            assert_eq!(
                e,
                BadNameChar {
                    name: format!("a{c}b"),
                    c
                }
            );
        }
        assert!(matches!(
            bad(&format!("/nix/store/{HASH}-a/bin/sh")),
            BadNameChar { c: '/', .. }
        ));
        for name in [".", "..", ".-a", "..-a"] {
            assert_eq!(
                bad(&format!("/nix/store/{HASH}-{name}")),
                ReservedName(name.into())
            );
        }
    }

    #[test]
    fn multibyte_input_does_not_panic() {
        // A split inside a multi-byte character must be an error, not a panic.
        let s = format!("/nix/store/{}é-a", "a".repeat(31));
        assert!(StorePath::parse(&s).is_err());
    }

    #[test]
    fn sorts_like_full_paths_and_serialises_as_one() {
        let a = StorePath::from_basename("h7gp268p5slha3i50466ffpaixchymgl-b-dep.txt").unwrap();
        let b = StorePath::from_basename("mgw6qqx1y9d333nrv50qmznas4cbnsqm-a-dep.txt").unwrap();
        assert!(a < b);
        let json = serde_json::to_string(&a).unwrap();
        assert_eq!(json, format!("\"{a}\""));
        assert_eq!(serde_json::from_str::<StorePath>(&json).unwrap(), a);
        assert!(serde_json::from_str::<StorePath>("\"/tmp/x\"").is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn never_panics_and_round_trips(s in "(/nix/store/)?[0-9a-z]{0,34}-?\\PC{0,20}") {
                if let Ok(p) = StorePath::parse(&s) {
                    prop_assert_eq!(p.to_absolute(), s.clone());
                    prop_assert_eq!(StorePath::from_basename(p.basename()).unwrap(), p);
                }
                let _ = StorePath::from_basename(&s);
            }
        }
    }
}
