//! The push client used by `larder push`.
//!
//! 1. Resolve the arguments to store paths; ask `nix path-info --recursive --json` for
//!    the closure, and look up (not read) each path's build log.
//! 2. `POST /api/pending_closures` per root, declaring every object from what Nix says
//!    (NAR named by its NarHash, listing, log). The worker answers with what it lacks;
//!    nothing else is ever read, so a cached push is one round trip per root.
//! 3. For each path with anything pending, `--jobs` at a time, biggest first: one
//!    streaming pass reads the NAR from the filesystem, hashes it (NarHash, checked
//!    against Nix's), zstd-compresses it into a spool (memory within `--memory-budget`,
//!    else a temporary file) and hashes that (FileHash); the listing and log are
//!    compressed; `POST /api/pending_closures/{id}/files` declares their hashes and
//!    returns PUTs bound to them (`x-amz-checksum-sha256`), and they go up at once
//!    (single PUT or parallel multipart) while other paths are being compressed.
//! 4. Sign the pending narinfos, upload them zstd-encoded (`Content-Encoding: zstd`,
//!    like niks3), complete.

/// Wire types shared with the worker's upload API.
pub use crate::upload::wire;

pub mod api;
pub mod args;
pub mod closure;
pub mod dump;
pub mod objects;
mod pipeline;
pub mod prepare;
pub mod progress;
pub mod retry;
mod run;
pub mod spool;
pub mod upload;

pub use args::PushArgs;
pub use progress::PushSummary;
pub use run::{default_zstd_workers, push, PushError, PushOptions};
