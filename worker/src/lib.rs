//! Larder worker: a Nix binary cache on S3 with niks3-compatible upload sessions.

#[cfg(feature = "lead-wip")]
pub mod auth;
#[cfg(feature = "lead-wip")]
pub mod cli;
#[cfg(feature = "lead-wip")]
pub mod db;
#[cfg(feature = "lead-wip")]
pub mod gc;
pub mod index;
pub mod nix;
pub mod push;
#[cfg(feature = "lead-wip")]
pub mod read;
#[cfg(feature = "lead-wip")]
pub mod server;
pub mod storage;
#[cfg(feature = "lead-wip")]
pub mod upload;
