//! Larder worker: a Nix binary cache on S3 with niks3-compatible upload sessions.

pub mod index;
pub mod nix;
pub mod push;
