//! Per-object exponential backoff after failed reconciles.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// First retry delay.
const BASE: Duration = Duration::from_secs(5);
/// Longest retry delay.
const CAP: Duration = Duration::from_secs(300);

/// The delay before retry number `failures` (1 for the first failure): doubling, capped.
pub fn delay(failures: u32) -> Duration {
    let factor = 2u32.saturating_pow(failures.saturating_sub(1).min(16));
    BASE.saturating_mul(factor).min(CAP)
}

/// How long a failure count is kept without a new failure. An object that still fails
/// fails again within [`CAP`]; one that went quiet this long was deleted (its reconciles
/// stop, so nothing would ever call [`Backoff::succeeded`] for it) or is healthy.
const FORGET_AFTER: Duration = Duration::from_secs(2 * CAP.as_secs());

/// Failure counts per object key (`kind/namespace/name`), with the time of the last one.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl Backoff {
    /// Records a failure of `key` and returns how long to wait.
    pub fn failed(&self, key: &str) -> Duration {
        self.failed_at(key, Instant::now())
    }

    fn failed_at(&self, key: &str, now: Instant) -> Duration {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        // Deleted objects would otherwise keep their counts for the operator's lifetime.
        map.retain(|_, (_, last)| now.saturating_duration_since(*last) < FORGET_AFTER);
        let (n, last) = map.entry(key.to_string()).or_insert((0, now));
        *n = n.saturating_add(1);
        *last = now;
        delay(*n)
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }

    /// How many objects have failure counts.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
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

    #[test]
    fn counts_of_objects_that_stopped_failing_are_forgotten() {
        let b = Backoff::default();
        let start = Instant::now();
        b.failed_at("ns/deleted", start);
        b.failed_at("ns/deleted", start);
        let later = start + FORGET_AFTER - Duration::from_secs(1);
        assert_eq!(b.failed_at("ns/failing", later), Duration::from_secs(5));
        assert_eq!(b.len(), 2, "kept within the window");
        let much_later = start + FORGET_AFTER + Duration::from_secs(1);
        assert_eq!(
            b.failed_at("ns/failing", much_later),
            Duration::from_secs(10)
        );
        assert_eq!(b.len(), 1, "the deleted object's count is gone");
        assert_eq!(
            b.failed_at("ns/deleted", much_later),
            Duration::from_secs(5)
        );
    }
}
