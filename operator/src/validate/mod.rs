//! Pure checks between fetching and building: a resource either becomes a `Valid…` value the
//! builders accept, or an error that becomes a `Ready=False` condition with its reason.

mod binary_cache;
mod duration;
mod gc_policy;
pub mod token_file;

pub use binary_cache::*;
pub use duration::parse_duration;
pub use gc_policy::*;

use std::collections::BTreeMap;

/// The data of one Secret, key to bytes.
pub type SecretData = BTreeMap<String, Vec<u8>>;

/// The referenced Secrets as fetched: `None` for one that does not exist.
pub type Secrets = BTreeMap<String, Option<SecretData>>;

/// Turns a Secret's data into [`SecretData`].
pub fn secret_data(secret: &k8s_openapi::api::core::v1::Secret) -> SecretData {
    let mut data: SecretData = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    // stringData is write-only on the server, but objects built in tests may carry it.
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.as_bytes().to_vec());
    }
    data
}
