//! Binary cache index (Nix RFC 0195, format `hlssi`).
//!
//! The codec, without I/O: `hash` (hash parts as 160-bit H, depth, prefix) → `bits`
//! (MSB-first bit streams) → `rice` (gap codes) → `header` (shard header, sparse entries, shard errors) →
//! `shard` (streaming writer) and `reader` (lookup, iteration) → `compress` (capped zstd).
//! Around the shards: `journal` (segments), `delta` (epoch deltas), `checksums`,
//! `manifest` (nix-cache-info keys) and `manifest_json`, `bloom` (Determinate Nix filter),
//! `query` (a client's answer), `paths` (object keys and request paths).
//!
//! Writing and publishing it: `plan` (the writers' decisions, pure), `files` (index files
//! in the object store), `publish` (the journal publisher `larder serve` runs), `build`
//! (`larder index build`), `client` (a cache's index over HTTP, for `larder index query`
//! and `larder push`).

pub mod bits;
pub mod bloom;
pub mod build;
pub mod checksums;
pub mod client;
pub mod compress;
pub mod delta;
pub mod files;
pub mod hash;
pub mod header;
pub mod journal;
pub mod manifest;
pub mod manifest_json;
pub mod paths;
pub mod plan;
pub mod publish;
pub mod query;
pub mod reader;
pub mod rice;
pub mod shard;
