//! The compressions a narinfo's `Compression` field and a NAR key's extension may name.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::preview;

/// A compression name Larder does not support.
#[derive(Debug, Error, PartialEq, Eq)]
#[error("unsupported compression {0:?} (expected none, zstd, xz or bzip2)")]
pub struct CompressionError(pub String);

/// How a NAR file is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Stored as is: `nar/<hash>.nar`.
    None,
    /// `nar/<hash>.nar.zst`, what the niks3 client uploads.
    Zstd,
    /// `nar/<hash>.nar.xz`, what cache.nixos.org serves.
    Xz,
    /// `nar/<hash>.nar.bz2`, Nix's default when a narinfo names none.
    Bzip2,
}

impl Compression {
    /// Every supported compression.
    pub const ALL: [Compression; 4] = [Self::None, Self::Zstd, Self::Xz, Self::Bzip2];

    /// The name written in a narinfo.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Zstd => "zstd",
            Self::Xz => "xz",
            Self::Bzip2 => "bzip2",
        }
    }

    /// What follows `.nar` in the object key.
    pub const fn extension(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Zstd => ".zst",
            Self::Xz => ".xz",
            Self::Bzip2 => ".bz2",
        }
    }

    /// The compression whose key extension (after `.nar`) is `ext`.
    pub fn from_extension(ext: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.extension() == ext)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Compression {
    type Err = CompressionError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| CompressionError(preview(s)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_extensions_round_trip() {
        for c in Compression::ALL {
            assert_eq!(c.as_str().parse::<Compression>().unwrap(), c);
            assert_eq!(Compression::from_extension(c.extension()), Some(c));
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(json, format!("\"{c}\""));
        }
        assert_eq!(Compression::Zstd.extension(), ".zst");
    }

    #[test]
    fn rejects_unknown() {
        assert_eq!(
            "br".parse::<Compression>().unwrap_err(),
            CompressionError("br".into())
        );
        assert_eq!(Compression::from_extension(".gz"), None);
    }
}
