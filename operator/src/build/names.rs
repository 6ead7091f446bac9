//! Names of the children, derived from the owner's name so they are found again.

use crate::crd::BinaryCacheSpec;

/// ServiceAccount, Deployment, Service, PodDisruptionBudget, HPA and Ingress share the cache's name.
pub fn workers(cache: &str) -> String {
    cache.to_string()
}

/// The worker ConfigMap.
pub fn config_map(cache: &str) -> String {
    format!("{cache}-config")
}

/// The signing key Secret: the one the spec names, or `<cache>-signing-key`.
pub fn signing_key_secret(cache: &str, spec: &BinaryCacheSpec) -> String {
    spec.signing_key
        .secret_name
        .clone()
        .unwrap_or_else(|| format!("{cache}-signing-key"))
}

/// The index CronJob.
pub fn index_cronjob(cache: &str) -> String {
    format!("{cache}-index")
}

/// The migration Job for one image and database; a new pair gets a new Job, since Jobs are immutable.
pub fn migration_job(cache: &str, migration_key: &str) -> String {
    format!("{cache}-migrate-{migration_key}")
}

/// The garbage collection CronJob of a GCPolicy.
pub fn gc_cronjob(policy: &str) -> String {
    format!("{policy}-gc")
}
