//! Object keys of index files, built from validated parts, and request paths parsed into them.

use std::fmt;

use thiserror::Error;

use super::hash::Prefix;

/// Folder of every index file, under the cache root.
pub const ROOT: &str = "nix-cache-index";

/// Why a request path is not an index file.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PathError {
    #[error("not an index file path")]
    NotIndex,
    #[error("index path has a character outside [a-z0-9./-]")]
    Character,
    #[error("index path has an empty, `.` or `..` segment")]
    Segment,
    #[error("{0:?} is not a canonical decimal number")]
    Number(String),
    #[error("epoch 0 does not exist")]
    ZeroEpoch,
    #[error("delta from epoch {from} to {to} does not go forward")]
    DeltaOrder { from: u64, to: u64 },
    #[error("{0:?} is not a shard prefix")]
    Prefix(String),
}

/// One index file, named only by validated parts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum IndexFile {
    /// `nix-cache-index/manifest.json`
    Manifest,
    /// `nix-cache-index/journal/<segment>.log`
    Journal { segment: u64 },
    /// `nix-cache-index/shards/<epoch>/<prefix>.idx.zst`
    Shard { epoch: u64, prefix: Prefix },
    /// `nix-cache-index/deltas/<from>-<to>/<prefix>.delta.zst`
    Delta { from: u64, to: u64, prefix: Prefix },
    /// `nix-cache-index/deltas/checksums/<epoch>.json`
    Checksums { epoch: u64 },
    /// `nix-cache-index/bloom.bin`
    Bloom,
}

impl IndexFile {
    /// A shard's file; epochs start at 1.
    pub fn shard(epoch: u64, prefix: Prefix) -> Result<Self, PathError> {
        nonzero(epoch)?;
        Ok(IndexFile::Shard { epoch, prefix })
    }

    /// A delta's file; `from` must be below `to`, both epochs.
    pub fn delta(from: u64, to: u64, prefix: Prefix) -> Result<Self, PathError> {
        nonzero(from)?;
        if from >= to {
            return Err(PathError::DeltaOrder { from, to });
        }
        Ok(IndexFile::Delta { from, to, prefix })
    }

    /// An epoch's checksums file.
    pub fn checksums(epoch: u64) -> Result<Self, PathError> {
        nonzero(epoch)?;
        Ok(IndexFile::Checksums { epoch })
    }

    /// The object key relative to the cache root.
    pub fn key(&self) -> String {
        match self {
            IndexFile::Manifest => format!("{ROOT}/manifest.json"),
            IndexFile::Journal { segment } => format!("{ROOT}/journal/{segment}.log"),
            IndexFile::Shard { epoch, prefix } => format!("{ROOT}/shards/{epoch}/{prefix}.idx.zst"),
            IndexFile::Delta { from, to, prefix } => {
                format!("{ROOT}/deltas/{from}-{to}/{prefix}.delta.zst")
            }
            IndexFile::Checksums { epoch } => format!("{ROOT}/deltas/checksums/{epoch}.json"),
            IndexFile::Bloom => format!("{ROOT}/bloom.bin"),
        }
    }

    /// Whether the file never changes once written (shards, deltas, checksums).
    pub fn is_immutable(&self) -> bool {
        matches!(
            self,
            IndexFile::Shard { .. } | IndexFile::Delta { .. } | IndexFile::Checksums { .. }
        )
    }

    /// Parses a request path (with or without one leading `/`) into an index file.
    pub fn parse_request(path: &str) -> Result<Self, PathError> {
        let path = path.strip_prefix('/').unwrap_or(path);
        if !path
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'/' | b'-'))
        {
            return Err(PathError::Character);
        }
        let parts: Vec<&str> = path.split('/').collect();
        if parts
            .iter()
            .any(|p| p.is_empty() || *p == "." || *p == "..")
        {
            return Err(PathError::Segment);
        }
        match parts.as_slice() {
            [ROOT, "manifest.json"] => Ok(IndexFile::Manifest),
            [ROOT, "bloom.bin"] => Ok(IndexFile::Bloom),
            [ROOT, "journal", file] => {
                let id = file.strip_suffix(".log").ok_or(PathError::NotIndex)?;
                Ok(IndexFile::Journal {
                    segment: number(id)?,
                })
            }
            [ROOT, "shards", epoch, file] => {
                let stem = file.strip_suffix(".idx.zst").ok_or(PathError::NotIndex)?;
                IndexFile::shard(number(epoch)?, prefix(stem)?)
            }
            [ROOT, "deltas", "checksums", file] => {
                let stem = file.strip_suffix(".json").ok_or(PathError::NotIndex)?;
                IndexFile::checksums(number(stem)?)
            }
            [ROOT, "deltas", range, file] => {
                let (from, to) = range.split_once('-').ok_or(PathError::NotIndex)?;
                let stem = file.strip_suffix(".delta.zst").ok_or(PathError::NotIndex)?;
                IndexFile::delta(number(from)?, number(to)?, prefix(stem)?)
            }
            _ => Err(PathError::NotIndex),
        }
    }
}

impl fmt::Display for IndexFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

fn nonzero(epoch: u64) -> Result<(), PathError> {
    if epoch == 0 {
        Err(PathError::ZeroEpoch)
    } else {
        Ok(())
    }
}

/// A canonical decimal u64: digits only, no leading zero except `0` itself.
fn number(s: &str) -> Result<u64, PathError> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let err = || PathError::Number(s.chars().take(24).collect());
    if !canonical {
        return Err(err());
    }
    s.parse().map_err(|_| err())
}

fn prefix(s: &str) -> Result<Prefix, PathError> {
    Prefix::parse(s).map_err(|_| PathError::Prefix(s.chars().take(8).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Prefix {
        Prefix::parse(s).unwrap()
    }

    #[test]
    fn builds_keys() {
        assert_eq!(IndexFile::Manifest.key(), "nix-cache-index/manifest.json");
        assert_eq!(IndexFile::Bloom.key(), "nix-cache-index/bloom.bin");
        assert_eq!(
            IndexFile::Journal {
                segment: 1705147200
            }
            .key(),
            "nix-cache-index/journal/1705147200.log"
        );
        assert_eq!(
            IndexFile::shard(42, p("b6")).unwrap().key(),
            "nix-cache-index/shards/42/b6.idx.zst"
        );
        assert_eq!(
            IndexFile::shard(3, p("root")).unwrap().key(),
            "nix-cache-index/shards/3/root.idx.zst"
        );
        assert_eq!(
            IndexFile::delta(41, 42, p("b6")).unwrap().key(),
            "nix-cache-index/deltas/41-42/b6.delta.zst"
        );
        assert_eq!(
            IndexFile::checksums(42).unwrap().key(),
            "nix-cache-index/deltas/checksums/42.json"
        );
        assert_eq!(IndexFile::shard(0, p("b6")), Err(PathError::ZeroEpoch));
        assert!(IndexFile::delta(42, 42, p("b6")).is_err());
        assert!(IndexFile::checksums(0).is_err());
    }

    #[test]
    fn parses_every_shape_back() {
        for f in [
            IndexFile::Manifest,
            IndexFile::Bloom,
            IndexFile::Journal { segment: 0 },
            IndexFile::Journal { segment: u64::MAX },
            IndexFile::shard(1, p("root")).unwrap(),
            IndexFile::shard(7, p("zzzz")).unwrap(),
            IndexFile::delta(1, 2, p("0")).unwrap(),
            IndexFile::checksums(99).unwrap(),
        ] {
            assert_eq!(IndexFile::parse_request(&f.key()).unwrap(), f);
            assert_eq!(
                IndexFile::parse_request(&format!("/{}", f.key())).unwrap(),
                f
            );
        }
        assert!(IndexFile::shard(1, p("b6")).unwrap().is_immutable());
        assert!(!IndexFile::Manifest.is_immutable());
        assert!(!IndexFile::Journal { segment: 5 }.is_immutable());
    }

    #[test]
    fn rejects_everything_else() {
        for bad in [
            "",
            "/",
            "nix-cache-info",
            "nix-cache-index",
            "nix-cache-index/",
            "nix-cache-index//manifest.json",
            "//nix-cache-index/manifest.json",
            "nix-cache-index/../nix-cache-info",
            "nix-cache-index/shards/../../secret",
            "nix-cache-index/./manifest.json",
            "nix-cache-index/Manifest.json",
            "nix-cache-index/manifest.json/",
            "nix-cache-index/manifest.json?x=1",
            "nix-cache-index/journal/01.log",
            "nix-cache-index/journal/1.log.zst",
            "nix-cache-index/journal/-1.log",
            "nix-cache-index/journal/99999999999999999999.log",
            "nix-cache-index/journal/%2e%2e.log",
            "nix-cache-index/shards/0/root.idx.zst",
            "nix-cache-index/shards/1/roots.idx.zst",
            "nix-cache-index/shards/1/e6.idx.zst",
            "nix-cache-index/shards/1/abcde.idx.zst",
            "nix-cache-index/shards/1/b6.idx",
            "nix-cache-index/shards/1/b6.idx.zst/x",
            "nix-cache-index/shards/1\\b6.idx.zst",
            "nix-cache-index/shards/1/b6.idx.zst\0",
            "nix-cache-index/shards/１/b6.idx.zst",
            "nix-cache-index/deltas/2-1/b6.delta.zst",
            "nix-cache-index/deltas/1-1/b6.delta.zst",
            "nix-cache-index/deltas/1_2/b6.delta.zst",
            "nix-cache-index/deltas/1-2-3/b6.delta.zst",
            "nix-cache-index/deltas/checksums/0.json",
            "nix-cache-index/deltas/checksums/x.json",
            "nix-cache-index/bloom.bin.bak",
            "x/nix-cache-index/manifest.json",
        ] {
            assert!(IndexFile::parse_request(bad).is_err(), "{bad:?}");
        }
    }
}
