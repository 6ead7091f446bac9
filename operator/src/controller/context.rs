//! What every reconcile shares: the client, defaults, metrics, events and backoff.

use std::sync::Arc;

use kube::runtime::events::{Recorder, Reporter};
use kube::Client;

use super::Backoff;
use crate::metrics::Metrics;
use crate::validate::Defaults;

/// Shared state of the controllers.
#[derive(Clone)]
pub struct Context {
    /// API client.
    pub client: Client,
    /// Settings from the operator's flags.
    pub defaults: Defaults,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Event publisher.
    pub recorder: Recorder,
    /// Failure counts for retries.
    pub backoff: Arc<Backoff>,
    reporter: Reporter,
}

impl Context {
    /// A context whose events are reported as `larder-operator` from `instance`.
    pub fn new(
        client: Client,
        defaults: Defaults,
        metrics: Arc<Metrics>,
        instance: Option<String>,
    ) -> Self {
        let reporter = Reporter {
            controller: super::MANAGER.into(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            reporter,
            client,
            defaults,
            metrics,
            backoff: Arc::default(),
        }
    }

    /// A recorder with nothing to fold into: for Events whose note is the news (a new
    /// validation message under the same reason), which callers publish once per change.
    pub fn fresh_recorder(&self) -> Recorder {
        Recorder::new(self.client.clone(), self.reporter.clone())
    }
}
