//! Per-object exponential backoff after failed reconciles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// First retry delay.
const BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
const CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 for the first failure): doubling, capped.
pub fn delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BASE.saturating_mul(factor).min(CAP)
}

/// Failure counts per object key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait.
    pub fn failed(&self, key: &str) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        delay(*n)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap() {
        assert_eq!(delay(1), Duration::from_secs(5));
        assert_eq!(delay(2), Duration::from_secs(10));
        assert_eq!(delay(4), Duration::from_secs(40));
        assert_eq!(delay(10), CAP);
        assert_eq!(delay(u32::MAX), CAP);
    }

    #[test]
    fn success_resets_the_count() {
        let b = Backoff::default();
        b.failed("ns/a");
        assert_eq!(b.failed("ns/a"), Duration::from_secs(10));
        assert_eq!(b.failed("ns/b"), Duration::from_secs(5));
        b.succeeded("ns/a");
        assert_eq!(b.failed("ns/a"), Duration::from_secs(5));
    }
}
