//! Prometheus metrics of the reconcilers.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels naming the reconciled kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// `BinaryCache` or `GCPolicy`.
    pub kind: String,
}

/// Labels naming the kind and why it failed.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `BinaryCache` or `GCPolicy`.
    pub kind: String,
    /// A short reason: the failed API verb or the validation reason.
    pub reason: String,
}

/// The operator's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    invalid: Family<FailureLabels, Counter>,
    watch_failures: Family<KindLabels, Counter>,
    duration: Family<KindLabels, Histogram>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("larder_operator");
        let reconciles = Family::<KindLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let invalid = Family::<FailureLabels, Counter>::default();
        let watch_failures = Family::<KindLabels, Counter>::default();
        let duration = Family::<KindLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.005, 2.0, 14))
        });
        registry.register("reconciles", "Reconciles started", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Reconciles that failed and will be retried",
            failures.clone(),
        );
        registry.register(
            "invalid_resources",
            "Reconciles that found the resource invalid",
            invalid.clone(),
        );
        registry.register(
            "watch_failures",
            "Failed lists or watches feeding a controller (often missing RBAC), retried with backoff",
            watch_failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time a reconcile took",
            duration.clone(),
        );
        Self {
            registry,
            reconciles,
            failures,
            invalid,
            watch_failures,
            duration,
        }
    }
}

impl Metrics {
    /// Counts a finished reconcile of `kind` that took `elapsed`.
    pub fn reconciled(&self, kind: &str, elapsed: Duration) {
        let labels = KindLabels { kind: kind.into() };
        self.reconciles.get_or_create(&labels).inc();
        self.duration
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// Counts a failed reconcile.
    pub fn failed(&self, kind: &str, reason: &str) {
        self.failures
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a reconcile that found its resource invalid.
    pub fn invalid(&self, kind: &str, reason: &str) {
        self.invalid
            .get_or_create(&FailureLabels {
                kind: kind.into(),
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts a failed list or watch of the controller for `kind`.
    pub fn watch_failed(&self, kind: &str) {
        self.watch_failures
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    /// Failed lists or watches of the controller for `kind` so far.
    pub fn watch_failure_count(&self, kind: &str) -> u64 {
        self.watch_failures
            .get_or_create(&KindLabels { kind: kind.into() })
            .get()
    }

    /// Reconciles of `kind` finished so far (tests and benchmarks watch it for hot loops).
    pub fn reconcile_count(&self, kind: &str) -> u64 {
        self.reconciles
            .get_or_create(&KindLabels { kind: kind.into() })
            .get()
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_show_up_in_the_text_format() {
        let m = Metrics::default();
        m.reconciled("BinaryCache", Duration::from_millis(20));
        m.failed("GCPolicy", "apply");
        m.watch_failed("BinaryCache");
        assert_eq!(m.reconcile_count("BinaryCache"), 1);
        assert_eq!(m.reconcile_count("GCPolicy"), 0);
        let text = m.render();
        assert!(
            text.contains(r#"larder_operator_reconciles_total{kind="BinaryCache"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"larder_operator_reconcile_failures_total{kind="GCPolicy",reason="apply"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"larder_operator_watch_failures_total{kind="BinaryCache"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("larder_operator_reconcile_duration_seconds_bucket"),
            "{text}"
        );
    }
}
