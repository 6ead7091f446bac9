//! Compressed shard files: capped decompression, then the shard reader.
#![no_main]

use larder_worker::index::compress::decompress;
use larder_worker::index::reader::Shard;
use libfuzzer_sys::fuzz_target;
use ruint::aliases::U160;

fuzz_target!(|data: &[u8]| {
    if let Ok(raw) = decompress(data, 1 << 20) {
        if let Ok(shard) = Shard::parse(raw) {
            let _ = shard.contains(U160::from(1u8));
            let _ = shard.validate();
        }
    }
});
