//! Every text decoder of the index: journal, delta, manifest (both forms), checksums, paths.
#![no_main]

use larder_worker::index::checksums::Checksums;
use larder_worker::index::delta::parse_delta;
use larder_worker::index::hash::{parse_hash, Prefix};
use larder_worker::index::journal::parse_segment;
use larder_worker::index::manifest::Manifest;
use larder_worker::index::paths::IndexFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_segment(text);
    let _ = parse_delta(text);
    let _ = Manifest::from_cache_info(text);
    let _ = Manifest::from_json(text);
    let _ = Checksums::parse(text);
    let _ = IndexFile::parse_request(text);
    let _ = parse_hash(text);
    let _ = Prefix::parse(text);
});
