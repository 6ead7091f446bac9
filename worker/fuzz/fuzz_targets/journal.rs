//! Journal segments alone (the text target mixes every text decoder): parse, then fold
//! the changes the way a client does. Must never panic or hang.
#![no_main]

use larder_worker::index::journal::{latest_ops, parse_segment};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(changes) = parse_segment(text) {
            let _ = latest_ops([changes.as_slice()]);
        }
    }
});
