//! The Nix ARchive format: a streaming writer and a validating streaming reader.
//!
//! A NAR is a sequence of strings, each a little-endian u64 length, the bytes, and zero
//! padding to a multiple of 8. `nar = "nix-archive-1" node`, where a node is
//! `"(" "type" ("regular" ["executable" ""] "contents" <bytes> | "symlink" "target" <t>
//! | "directory" {"entry" "(" "name" <n> "node" node ")"}) ")"`, entries sorted by name.

mod reader;
mod writer;

use std::io;

use thiserror::Error;

pub use reader::{NarEvent, NarLimits, NarReader};
pub use writer::NarWriter;

/// The string every NAR starts with.
pub(crate) const MAGIC: &[u8] = b"nix-archive-1";

/// Why a NAR could not be written or read.
#[derive(Debug, Error)]
pub enum NarError {
    #[error("NAR I/O: {0}")]
    Io(#[from] io::Error),
    #[error("NAR ends early at byte {offset}")]
    UnexpectedEof { offset: u64 },
    #[error("not a NAR: it does not start with \"nix-archive-1\"")]
    BadMagic,
    #[error("NAR byte {offset}: expected {expected}, found {found:?}")]
    UnexpectedToken {
        offset: u64,
        expected: &'static str,
        found: String,
    },
    #[error("NAR byte {offset}: {what} of {len} bytes exceeds the limit of {max}")]
    TooLong {
        offset: u64,
        what: &'static str,
        len: u64,
        max: u64,
    },
    #[error("NAR byte {offset}: padding is not zero")]
    NonZeroPadding { offset: u64 },
    #[error("NAR entry name {name:?} is invalid: {reason}")]
    BadName { name: String, reason: &'static str },
    #[error("NAR entry {name:?} does not sort after {previous:?}")]
    Unsorted { previous: String, name: String },
    #[error("NAR nests directories deeper than {max}")]
    TooDeep { max: usize },
    #[error("NAR has more than {max} entries")]
    TooManyEntries { max: u64 },
    #[error("NAR symlink target is empty or contains NUL")]
    BadTarget,
    #[error("NAR has data after its end, at byte {offset}")]
    TrailingData { offset: u64 },
    #[error("NAR writer misuse: {0}")]
    Misuse(&'static str),
    #[error("NAR file contents: {declared} bytes declared, {written} written")]
    SizeMismatch { declared: u64, written: u64 },
}

/// Number of zero bytes that pad `len` bytes to a multiple of 8.
pub(crate) const fn padding(len: u64) -> usize {
    ((8 - len % 8) % 8) as usize
}

/// Checks a directory entry name: non-empty, no `/` or NUL, not `.` or `..`.
pub(crate) fn check_name(name: &[u8]) -> Result<(), NarError> {
    let reason = if name.is_empty() {
        "empty"
    } else if name == b"." || name == b".." {
        "`.` and `..` are not entries"
    } else if name.contains(&b'/') {
        "contains `/`"
    } else if name.contains(&0) {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(NarError::BadName {
        name: show(name),
        reason,
    })
}

/// Bytes shown in an error, lossily and shortened.
pub(crate) fn show(bytes: &[u8]) -> String {
    super::preview(&String::from_utf8_lossy(bytes))
}

#[cfg(test)]
mod tests;
