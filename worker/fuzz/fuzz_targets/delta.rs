//! Delta files alone: capped decompression, then the delta parser.
#![no_main]

use larder_worker::index::compress::decompress;
use larder_worker::index::delta::parse_delta;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_delta(text);
    }
    if let Ok(raw) = decompress(data, 1 << 20) {
        if let Ok(text) = std::str::from_utf8(&raw) {
            let _ = parse_delta(text);
        }
    }
});
