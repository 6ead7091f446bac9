//! Manifests alone: `nix-cache-info` lines and `manifest.json`, plus checksums files.
#![no_main]

use larder_worker::index::checksums::Checksums;
use larder_worker::index::manifest::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = Manifest::from_cache_info(&text);
    let _ = Manifest::from_json(&text);
    let _ = Checksums::parse(&text);
});
