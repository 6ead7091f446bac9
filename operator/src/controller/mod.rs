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
            Self::Metadata(_) => "metadata",
            Self::Random(_) => "random",
        }
    }
}
