//! Nix formats: store paths, nix-base32, narinfo, NAR, signatures, cache-info.
//!
//! Everything here parses and renders; nothing does I/O (the NAR writer and reader work
//! over any `Write`/`Read` the caller hands them).

pub mod base32;
pub mod cache_info;
pub mod compression;
pub mod hash;
pub mod listing;
pub mod nar;
pub mod narinfo;
pub mod object_key;
pub mod signature;
pub mod store_path;

pub use cache_info::CacheInfo;
pub use compression::Compression;
pub use hash::NixHash;
pub use listing::{Listing, ListingNode};
pub use narinfo::NarInfo;
pub use object_key::{ObjectKey, ObjectType};
pub use signature::{PublicKey, SecretKey, Signature};
pub use store_path::StorePath;

/// Shortens untrusted input for error messages, so a huge bad value cannot flood a log.
pub(crate) fn preview(s: &str) -> String {
    const MAX: usize = 120;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}
