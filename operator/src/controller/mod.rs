//! Reconcilers: fetch what is referenced, validate (pure), build (pure), apply, write status.
//!
//! Only `fetch`, `apply` and the status write touch the API server; everything between is in
//! `validate`, `build` and `status`, tested without a cluster.

mod apply;
mod backoff;
pub mod binary_cache;
mod children;
mod context;
mod events;
pub mod gc_policy;
mod run;
mod suspend;

pub use apply::MANAGER;
pub use backoff::Backoff;
pub use context::Context;
pub use run::{run, Options};

/// A failure talking to the API server, with what was being done to which object.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("{verb} {kind} {name}: {source}")]
    Kube {
        /// What was being done.
        verb: &'static str,
        /// The object's kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The client error.
        #[source]
        source: Box<kube::Error>,
    },
    /// A child's name is taken by an object the operator must not take over.
    #[error("{kind} {name} exists and is not ours to manage: its controller is {controller}")]
    NotOwned {
        /// The child's kind.
        kind: String,
        /// The child's name.
        name: String,
        /// Who controls the existing object.
        controller: String,
    },
    /// The object from the watch lacks its name or namespace.
    #[error("object without {0}")]
    Metadata(&'static str),
    /// Random bytes for a new signing key could not be had.
    #[error("no randomness for a signing key: {0}")]
    Random(String),
}

impl Error {
    fn kube(verb: &'static str, kind: impl Into<String>, name: &str, source: kube::Error) -> Self {
        Self::Kube {
            verb,
            kind: kind.into(),
            name: name.to_string(),
            source: Box::new(source),
        }
    }

    /// A short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { verb, .. } => verb,
            Self::NotOwned { .. } => "not-owned",
            Self::Metadata(_) => "metadata",
            Self::Random(_) => "random",
        }
    }

    /// The condition reason for an error that retrying alone will not cure (a conflict over a
    /// child's name, a request the API server or an admission webhook refuses, a kind the
    /// cluster does not serve); `None` for errors worth retrying quietly (connection trouble,
    /// 5xx, write conflicts, throttling).
    pub fn lasting_reason(&self) -> Option<&'static str> {
        match self {
            Self::NotOwned { .. } => Some("ChildConflict"),
            Self::Kube { verb, source, .. } => match source.as_ref() {
                kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => {
                    Some("ApplyFailed")
                }
                // An apply creates or patches by name, so a 404 means the API server lacks the
                // resource itself: an API group or version this cluster does not serve (no
                // autoscaling/v2 or networking.k8s.io/v1 Ingress, say). Only the cluster's
                // admin or a spec without that child cures it.
                kube::Error::Api(status) if status.code == 404 && *verb == "apply" => {
                    Some("KindNotServed")
                }
                _ => None,
            },
            Self::Metadata(_) | Self::Random(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(verb: &'static str, code: u16) -> Error {
        let status = kube::core::Status {
            code,
            message: "the server could not find the requested resource".into(),
            reason: "NotFound".into(),
            ..kube::core::Status::default()
        };
        Error::kube(
            verb,
            "HorizontalPodAutoscaler",
            "main",
            kube::Error::Api(status.boxed()),
        )
    }

    #[test]
    fn a_kind_the_cluster_does_not_serve_is_a_lasting_failure() {
        assert_eq!(
            api_error("apply", 404).lasting_reason(),
            Some("KindNotServed")
        );
        // Elsewhere a 404 is an object gone meanwhile, which the next reconcile sees.
        assert_eq!(
            api_error("hand over replicas of", 404).lasting_reason(),
            None
        );
        assert_eq!(
            api_error("apply", 422).lasting_reason(),
            Some("ApplyFailed")
        );
        assert_eq!(api_error("apply", 409).lasting_reason(), None);
        assert_eq!(api_error("apply", 503).lasting_reason(), None);
    }
}
