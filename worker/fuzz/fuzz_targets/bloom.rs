//! Bloom filter files: parse, then query.
#![no_main]

use larder_worker::index::bloom::BloomFilter;
use libfuzzer_sys::fuzz_target;
use ruint::aliases::U160;

fuzz_target!(|data: &[u8]| {
    if let Ok(filter) = BloomFilter::parse(data) {
        let _ = filter.contains(U160::from(12345u64));
        let _ = filter.contains(U160::MAX);
    }
});
