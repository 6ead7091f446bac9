//! Nix formats: store paths, nix-base32, narinfo, NAR, signatures, cache-info.
//!
//! Everything here parses and renders; nothing does I/O.

pub mod base32;
