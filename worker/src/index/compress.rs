//! zstd for shards and deltas, with a hard cap on what decompression may produce.

use std::cell::RefCell;
use std::io::Read;

use thiserror::Error;

/// zstd level for index files: shard data is near-random, so more effort buys nothing.
pub const LEVEL: i32 = 3;
/// Default cap on a decompressed index file (a shard of ~10M items at depth 0 fits).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 256 << 20;
/// Largest zstd window accepted (2^27 bytes, zstd's own default limit).
const WINDOW_LOG_MAX: u32 = 27;

/// Why bytes could not be compressed or decompressed.
#[derive(Debug, Error)]
pub enum CompressError {
    #[error("zstd: {0}")]
    Zstd(#[from] std::io::Error),
    #[error("decompressed data exceeds the limit of {limit} bytes")]
    TooLarge { limit: usize },
}

thread_local! {
    /// One compression context per thread: setting one up costs more than compressing a
    /// small shard, and a build compresses tens of thousands.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compresses bytes as one zstd frame.
pub fn compress(data: &[u8]) -> Result<Vec<u8>, CompressError> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(c) => c,
            None => slot.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        Ok(compressor.compress(data)?)
    })
}

/// Decompresses zstd bytes, failing once the output would pass `limit` bytes.
pub fn decompress(data: &[u8], limit: usize) -> Result<Vec<u8>, CompressError> {
    let mut dec = zstd::stream::read::Decoder::with_buffer(data)?;
    dec.window_log_max(WINDOW_LOG_MAX)?;
    let mut out = Vec::new();
    // Read one byte past the limit to tell "exactly at the limit" from "over it".
    dec.take(limit as u64 + 1).read_to_end(&mut out)?;
    if out.len() > limit {
        return Err(CompressError::TooLarge { limit });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data: Vec<u8> = (0..10_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let z = compress(&data).unwrap();
        assert_eq!(decompress(&z, data.len()).unwrap(), data);
        assert_eq!(
            decompress(&compress(&[]).unwrap(), 0).unwrap(),
            Vec::<u8>::new()
        );
    }

    #[test]
    fn bombs_stop_at_the_limit() {
        // 1 GiB of zeros compresses to a few tens of KiB; the cap must stop it early.
        let zeros = vec![0u8; 64 << 20];
        let mut bomb = Vec::new();
        for _ in 0..16 {
            bomb.extend_from_slice(&compress(&zeros).unwrap());
        }
        assert!(bomb.len() < 64 << 10);
        assert!(matches!(
            decompress(&bomb, 1 << 20),
            Err(CompressError::TooLarge { limit: 1048576 })
        ));
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decompress(b"not zstd at all", 1 << 20).is_err());
        let z = compress(&[7u8; 1000]).unwrap();
        assert!(decompress(&z[..z.len() - 3], 1 << 20).is_err());
        assert!(decompress(&z, 999).is_err());
    }
}
