//! The push client used by `larder push`.
//!
//! 1. Resolve the arguments to store paths; ask `nix path-info --recursive --json` for
//!    the closure.
//! 2. Prepare every path in one streaming pass each: NAR from the filesystem, hashed
//!    (NarHash, checked against Nix's) and zstd-compressed into a spool (memory within
//!    `--memory-budget`, else a temporary file), hashed again (FileHash); the `.ls`
//!    listing and the build log, zstd-compressed.
//! 3. `POST /api/pending_closures` per root with every object, `file_hash`/`file_size`
//!    declared, so single PUTs are presigned with `x-amz-checksum-sha256`.
//! 4. Upload what is pending (single PUT or parallel multipart), sign the pending
//!    narinfos, upload them zstd-encoded (`Content-Encoding: zstd`, like niks3), complete.
//!
//! Paths already cached cost the prepare pass and one round trip; nothing is uploaded.
//! When the cache publishes a binary cache index, paths it lists skip the prepare pass.

/// Wire types shared with the worker's upload API.
pub use crate::upload::wire;

pub mod api;
pub mod args;
pub mod cached;
pub mod closure;
pub mod dump;
pub mod objects;
pub mod prepare;
pub mod progress;
pub mod retry;
mod run;
pub mod spool;
pub mod upload;

pub use args::PushArgs;
pub use progress::PushSummary;
pub use run::{default_zstd_workers, push, PushError, PushOptions};
