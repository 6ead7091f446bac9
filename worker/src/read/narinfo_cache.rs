//! Recently read narinfos, kept in memory for a short while.
//!
//! A fleet of Nix clients asks for the same narinfos over and over (every client checks
//! every path of its closure); each answer from memory saves an S3 GET, which costs more
//! than the rest of the request. Staleness is bounded by the TTL, which is far below
//! the `max-age` the proxy already sends for narinfos (so caches in front of the worker
//! are allowed to be staler than this): a narinfo the collector deletes, or a re-push
//! rewrites, is served at most one TTL longer. Misses are not remembered, so a path
//! pushed a moment ago is found at once; a collection run through this worker's admin
//! API clears the cache when it ends.

use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

/// Bookkeeping per entry counted against the byte budget besides key and body.
const ENTRY_OVERHEAD: u64 = 128;

/// One narinfo as served: the plain text and the validators of the stored object.
#[derive(Debug, Clone)]
pub struct CachedNarinfo {
    /// The narinfo text (decompressed).
    pub body: Bytes,
    /// Entity tag of the stored object.
    pub etag: Option<String>,
    /// Last modification of the stored object.
    pub last_modified: Option<SystemTime>,
    fetched: Instant,
}

#[derive(Debug, Clone)]
struct ByBytes;

impl Weighter<String, CachedNarinfo> for ByBytes {
    fn weight(&self, key: &String, value: &CachedNarinfo) -> u64 {
        key.len() as u64 + value.body.len() as u64 + ENTRY_OVERHEAD
    }
}

/// A byte-bounded map from narinfo key to its last answer; disabled when the budget is 0.
#[derive(Debug)]
pub struct NarinfoCache {
    entries: Option<Cache<String, CachedNarinfo, ByBytes>>,
    ttl: Duration,
}

impl NarinfoCache {
    /// A cache holding at most `max_bytes` of narinfos, each for `ttl`.
    pub fn new(max_bytes: u64, ttl: Duration) -> Self {
        let entries = (max_bytes > 0 && !ttl.is_zero()).then(|| {
            // A typical narinfo with its key takes about 1 KiB.
            let estimated = usize::try_from(max_bytes / 1024).unwrap_or(usize::MAX);
            Cache::with_weighter(estimated.max(16), max_bytes, ByBytes)
        });
        Self { entries, ttl }
    }

    /// A cache that keeps nothing.
    pub fn disabled() -> Self {
        Self::new(0, Duration::ZERO)
    }

    /// The entry for `key` if it is younger than the TTL.
    pub fn get(&self, key: &str) -> Option<CachedNarinfo> {
        let entries = self.entries.as_ref()?;
        let hit = entries.get(key)?;
        if hit.fetched.elapsed() < self.ttl {
            return Some(hit);
        }
        entries.remove(key);
        None
    }

    /// Remembers the answer for `key`, fetched just now.
    pub fn insert(
        &self,
        key: &str,
        body: Bytes,
        etag: Option<String>,
        last_modified: Option<SystemTime>,
    ) {
        if let Some(entries) = &self.entries {
            let entry = CachedNarinfo {
                body,
                etag,
                last_modified,
                fetched: Instant::now(),
            };
            entries.insert(key.to_string(), entry);
        }
    }

    /// Forgets everything (after this worker collected garbage).
    pub fn clear(&self) {
        if let Some(entries) = &self.entries {
            entries.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(cache: &NarinfoCache, key: &str, text: &str) {
        cache.insert(
            key,
            Bytes::copy_from_slice(text.as_bytes()),
            Some("\"e\"".into()),
            None,
        );
    }

    #[test]
    fn hits_until_the_ttl_then_forgets() {
        let cache = NarinfoCache::new(1 << 20, Duration::from_millis(200));
        assert!(cache.get("a.narinfo").is_none());
        put(&cache, "a.narinfo", "StorePath: /nix/store/a");
        let hit = cache.get("a.narinfo").unwrap();
        assert_eq!(&hit.body[..], b"StorePath: /nix/store/a");
        assert_eq!(hit.etag.as_deref(), Some("\"e\""));
        std::thread::sleep(Duration::from_millis(250));
        assert!(cache.get("a.narinfo").is_none(), "expired");
    }

    #[test]
    fn a_zero_budget_or_ttl_keeps_nothing_and_clear_empties() {
        for cache in [
            NarinfoCache::disabled(),
            NarinfoCache::new(0, Duration::from_secs(30)),
            NarinfoCache::new(1 << 20, Duration::ZERO),
        ] {
            put(&cache, "a.narinfo", "x");
            assert!(cache.get("a.narinfo").is_none());
        }
        let cache = NarinfoCache::new(1 << 20, Duration::from_secs(30));
        put(&cache, "a.narinfo", "x");
        cache.clear();
        assert!(cache.get("a.narinfo").is_none());
    }

    #[test]
    fn the_byte_budget_bounds_what_is_kept() {
        // Room for about ten entries of ~1 KiB.
        let cache = NarinfoCache::new(10 * 1024, Duration::from_secs(30));
        let text = "x".repeat(900);
        for i in 0..1000 {
            put(&cache, &format!("{i:032}.narinfo"), &text);
        }
        let kept = (0..1000)
            .filter(|i| cache.get(&format!("{i:032}.narinfo")).is_some())
            .count();
        assert!((1..=10).contains(&kept), "kept {kept}");
    }
}
