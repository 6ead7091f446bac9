//! When to try a request again and how long to wait: exponential backoff with jitter,
//! `Retry-After` honoured on 429 and 503, a bounded number of attempts.

use std::time::{Duration, SystemTime};

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub attempts: u32,
    /// Wait before the second attempt; doubled for each one after.
    pub base_delay: Duration,
    /// Longest wait between two attempts, `Retry-After` included.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// How one attempt ended, as far as retrying is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request never got an answer (connect, reset, timeout).
    Transport,
    /// The server answered with this status and, maybe, a `Retry-After` header.
    Status {
        status: u16,
        retry_after: Option<String>,
    },
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    RetryAfter(Duration),
    /// Give up: the failure is permanent or the attempts are used up.
    GiveUp,
}

/// Whether a status is worth another attempt: throttling, timeouts and server errors.
pub fn is_retryable_status(status: u16) -> bool {
    matches!(status, 408 | 425 | 429 | 500 | 502 | 503 | 504) || (520..600).contains(&status)
}

impl RetryPolicy {
    /// Decides after attempt number `attempt` (1-based) ended with `outcome`.
    /// `jitter` in `[0, 1)` spreads clients apart; `now` dates a `Retry-After` date.
    pub fn decide(
        &self,
        attempt: u32,
        outcome: &Outcome,
        jitter: f64,
        now: SystemTime,
    ) -> Decision {
        if attempt >= self.attempts {
            return Decision::GiveUp;
        }
        let backoff = self.backoff(attempt, jitter);
        match outcome {
            Outcome::Transport => Decision::RetryAfter(backoff),
            Outcome::Status {
                status,
                retry_after,
            } if is_retryable_status(*status) => {
                let asked = match status {
                    429 | 503 => retry_after
                        .as_deref()
                        .and_then(|v| parse_retry_after(v, now)),
                    _ => None,
                };
                // The server's wish wins when it asks for more patience than the backoff.
                let wait = asked.map_or(backoff, |a| a.max(backoff));
                Decision::RetryAfter(wait.min(self.max_delay))
            }
            Outcome::Status { .. } => Decision::GiveUp,
        }
    }

    /// Full-jitter-ish backoff: `base × 2^(attempt-1)` capped, then scaled into
    /// `[50%, 100%]` of itself by `jitter`.
    pub fn backoff(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let raw = self
            .base_delay
            .saturating_mul(1u32 << exp)
            .min(self.max_delay);
        let factor = 0.5 + 0.5 * jitter.clamp(0.0, 1.0);
        raw.mul_f64(factor)
    }
}

/// Parses `Retry-After`: delay seconds or an HTTP date (a past date means now).
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A random number in `[0, 1)` for jitter; falls back to the clock's nanoseconds.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    let raw = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => u64::from(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .subsec_nanos(),
        ),
    };
    (raw >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16, retry_after: Option<&str>) -> Outcome {
        Outcome::Status {
            status,
            retry_after: retry_after.map(str::to_string),
        }
    }

    const NOW: Duration = Duration::from_secs(1_700_000_000);

    #[test]
    fn backs_off_exponentially_within_jitter_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1, 1.0), Duration::from_millis(500));
        assert_eq!(p.backoff(2, 1.0), Duration::from_secs(1));
        assert_eq!(p.backoff(3, 1.0), Duration::from_secs(2));
        assert_eq!(p.backoff(3, 0.0), Duration::from_secs(1));
        assert_eq!(p.backoff(40, 1.0), p.max_delay, "capped, no overflow");
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }

    #[test]
    fn retries_transient_failures_and_gives_up_on_others() {
        let p = RetryPolicy::default();
        let now = SystemTime::UNIX_EPOCH + NOW;
        for outcome in [
            Outcome::Transport,
            status(500, None),
            status(502, None),
            status(429, None),
        ] {
            assert!(
                matches!(p.decide(1, &outcome, 0.5, now), Decision::RetryAfter(_)),
                "{outcome:?}"
            );
        }
        for code in [400, 401, 403, 404, 409, 413] {
            assert_eq!(
                p.decide(1, &status(code, None), 0.5, now),
                Decision::GiveUp,
                "{code}"
            );
        }
        assert_eq!(
            p.decide(5, &Outcome::Transport, 0.5, now),
            Decision::GiveUp,
            "attempts used up"
        );
        let once = RetryPolicy { attempts: 1, ..p };
        assert_eq!(
            once.decide(1, &Outcome::Transport, 0.5, now),
            Decision::GiveUp
        );
    }

    #[test]
    fn honours_retry_after_on_429_and_503_only() {
        let p = RetryPolicy::default();
        let now = SystemTime::UNIX_EPOCH + NOW;
        assert_eq!(
            p.decide(1, &status(429, Some("7")), 0.0, now),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        assert_eq!(
            p.decide(1, &status(503, Some("7")), 0.0, now),
            Decision::RetryAfter(Duration::from_secs(7))
        );
        // On 500 the header is not a throttling signal: plain backoff.
        assert_eq!(
            p.decide(1, &status(500, Some("7")), 1.0, now),
            Decision::RetryAfter(Duration::from_millis(500))
        );
        // Never shorter than the backoff, never longer than the cap.
        assert_eq!(
            p.decide(3, &status(429, Some("0")), 1.0, now),
            Decision::RetryAfter(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(1, &status(429, Some("86400")), 1.0, now),
            Decision::RetryAfter(p.max_delay)
        );
        // Garbage is ignored rather than fatal.
        assert_eq!(
            p.decide(1, &status(429, Some("soon")), 1.0, now),
            Decision::RetryAfter(Duration::from_millis(500))
        );
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + NOW;
        assert_eq!(
            parse_retry_after(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("", now), None);
        assert_eq!(parse_retry_after("Tuesday", now), None);
    }
}
