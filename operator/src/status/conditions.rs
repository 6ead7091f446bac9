//! `status.conditions` with `observedGeneration`, keeping transition times of unchanged conditions.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The cache or policy serves as asked.
pub const READY: &str = "Ready";
/// A change is being rolled out.
pub const PROGRESSING: &str = "Progressing";
/// Something is wrong that the operator cannot fix alone.
pub const DEGRADED: &str = "Degraded";

/// One condition as a reconcile decided it, before timestamps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// Condition type.
    pub type_: &'static str,
    /// True or False.
    pub status: bool,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
}

impl Decided {
    /// A condition with `reason` and `message`.
    pub fn new(
        type_: &'static str,
        status: bool,
        reason: &str,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status,
            reason: reason.to_string(),
            message: message.into(),
        }
    }
}

/// Conditions for `decided`, taking `lastTransitionTime` from `old` when the status did not flip.
pub fn merge(
    old: &[Condition],
    decided: &[Decided],
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    decided
        .iter()
        .map(|d| {
            let status = if d.status { "True" } else { "False" };
            let previous = old.iter().find(|c| c.type_ == d.type_);
            let last_transition_time = match previous {
                Some(p) if p.status == status => p.last_transition_time.clone(),
                _ => now.clone(),
            };
            Condition {
                type_: d.type_.to_string(),
                status: status.to_string(),
                reason: d.reason.clone(),
                // The API server requires a message of at most 32768 characters.
                message: d.message.chars().take(32_768).collect(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// The status of condition `type_`, if present.
pub fn is_true(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn unchanged_status_keeps_its_transition_time() {
        let first = merge(
            &[],
            &[Decided::new(READY, false, "A", "a")],
            Some(1),
            &at(10),
        );
        let again = merge(
            &first,
            &[Decided::new(READY, false, "B", "b")],
            Some(2),
            &at(20),
        );
        assert_eq!(again[0].last_transition_time, at(10));
        assert_eq!(again[0].reason, "B");
        assert_eq!(again[0].observed_generation, Some(2));
        let flipped = merge(
            &again,
            &[Decided::new(READY, true, "C", "c")],
            Some(2),
            &at(30),
        );
        assert_eq!(flipped[0].last_transition_time, at(30));
        assert_eq!(is_true(&flipped, READY), Some(true));
        assert_eq!(is_true(&flipped, DEGRADED), None);
    }
}
