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
    /// child's name, a request the API server or an admission webhook refuses); `None` for
    /// errors worth retrying quietly (connection trouble, 5xx, write conflicts, throttling).
    pub fn lasting_reason(&self) -> Option<&'static str> {
        match self {
            Self::NotOwned { .. } => Some("ChildConflict"),
            Self::Kube { source, .. } => match source.as_ref() {
                kube::Error::Api(status) if matches!(status.code, 400 | 403 | 422) => {
                    Some("ApplyFailed")
                }
                _ => None,
            },
            Self::Metadata(_) | Self::Random(_) => None,
        }
    }
}
