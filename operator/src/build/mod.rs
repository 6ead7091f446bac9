//! Pure functions from a validated spec to the Kubernetes objects it needs, one file per kind.
//!
//! Nothing here talks to the API server: every function takes what it needs as arguments, so
//! the rendered objects are tested (and snapshot-tested as YAML) without a cluster.

pub mod checksum;
pub mod children;
pub mod config_map;
pub mod deployment;
pub mod gc_cronjob;
pub mod hpa;
pub mod index_cronjob;
pub mod ingress;
pub mod migration_job;
pub mod names;
pub mod pdb;
pub mod pod;
pub mod resources;
pub mod rollout;
pub mod service;
pub mod service_account;
pub mod signing_key;

#[cfg(test)]
pub(crate) mod fixtures;

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

/// The port workers listen on inside the pod (`larder serve`'s default port).
pub const WORKER_PORT: i32 = 5050;

/// Pod annotation holding the checksum of everything workers read at start.
pub const CHECKSUM_ANNOTATION: &str = "larder.dev/config-checksum";

/// Label naming the GCPolicy a CronJob, Job or pod belongs to.
pub const GC_POLICY_LABEL: &str = "larder.dev/gc-policy";

/// Label naming who manages an object; the operator sets it to its field manager's name.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Which part of Larder an object belongs to (`app.kubernetes.io/component`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Component {
    /// The worker Deployment and what serves it.
    Worker,
    /// The index CronJob.
    Index,
    /// A garbage collection CronJob.
    Gc,
    /// The schema migration Job.
    Migrate,
    /// The signing key Secret.
    SigningKey,
}

impl Component {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Worker => "worker",
            Self::Index => "index",
            Self::Gc => "gc",
            Self::Migrate => "migrate",
            Self::SigningKey => "signing-key",
        }
    }
}

/// Labels that select one cache's objects of one component; stable for the object's life.
pub fn selector_labels(cache: &str, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "larder".to_string()),
        ("app.kubernetes.io/instance".to_string(), cache.to_string()),
        (
            "app.kubernetes.io/component".to_string(),
            component.as_str().to_string(),
        ),
    ])
}

/// Selector labels plus the manager label every child carries.
pub fn labels(cache: &str, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector_labels(cache, component);
    labels.insert(MANAGED_BY_LABEL.to_string(), "larder-operator".to_string());
    labels
}

/// Metadata of a child: name, namespace, labels and (when given) the controller owner reference.
pub fn child_meta(
    name: String,
    namespace: &str,
    labels: BTreeMap<String, String>,
    owner: Option<&OwnerReference>,
) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(namespace.to_string()),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o.clone()]),
        ..ObjectMeta::default()
    }
}

/// The cache as the builders see it: identity, spec and the facts validation resolved.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheView<'a> {
    /// Name of the BinaryCache.
    pub name: &'a str,
    /// Its namespace.
    pub namespace: &'a str,
    /// Controller owner reference pointing at it.
    pub owner: OwnerReference,
    /// Its spec.
    pub spec: &'a crate::crd::BinaryCacheSpec,
    /// The substituter URL clients use.
    pub url: String,
}
