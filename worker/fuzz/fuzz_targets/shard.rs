//! Decompressed shard bytes: parse, look up, iterate. Must never panic or hang.
#![no_main]

use larder_worker::index::header::ShardHeader;
use larder_worker::index::reader::Shard;
use libfuzzer_sys::fuzz_target;
use ruint::aliases::U160;

fuzz_target!(|data: &[u8]| {
    let _ = ShardHeader::parse(data);
    if let Ok(shard) = Shard::parse(data.to_vec()) {
        for v in [0u64, 1, 255, 256, 257, u64::MAX] {
            let _ = shard.contains(U160::from(v));
        }
        let _ = shard.contains(U160::MAX);
        let _ = shard.validate();
    }
});
