//! Checksums that make pods roll when what they read at start changes.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Hex SHA-256 over named byte strings, in key order, with lengths so that boundaries count.
pub fn of_entries<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> String {
    let mut hasher = Sha256::new();
    for (name, value) in entries {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((value.len() as u64).to_be_bytes());
        hasher.update(value);
    }
    hex(&hasher.finalize())
}

/// Checksum of the worker configuration and every Secret the pods read, keyed by Secret name.
pub fn of_pod_inputs(
    config: &BTreeMap<String, String>,
    secrets: &BTreeMap<String, BTreeMap<String, Vec<u8>>>,
) -> String {
    let config = config
        .iter()
        .map(|(k, v)| (format!("config/{k}"), v.as_bytes()));
    let secrets = secrets.iter().flat_map(|(name, data)| {
        data.iter()
            .map(move |(k, v)| (format!("secret/{name}/{k}"), v.as_slice()))
    });
    let owned: Vec<(String, &[u8])> = config.chain(secrets).collect();
    of_entries(owned.iter().map(|(k, v)| (k.as_str(), *v)))
}

/// The first `len` hex characters of the SHA-256 of `parts`: short, stable identifiers for names.
pub fn short(parts: &[&str], len: usize) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part.as_bytes());
    }
    let mut out = hex(&hasher.finalize());
    out.truncate(len);
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_boundaries_change_the_checksum() {
        let a = of_entries([("a", b"bc".as_slice())]);
        let b = of_entries([("ab", b"c".as_slice())]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 64);
    }

    #[test]
    fn a_secret_change_changes_the_pod_checksum() {
        let config = BTreeMap::from([("LARDER_S3_BUCKET".to_string(), "b".to_string())]);
        let mut secrets = BTreeMap::from([(
            "db".to_string(),
            BTreeMap::from([("url".to_string(), b"postgres://a".to_vec())]),
        )]);
        let before = of_pod_inputs(&config, &secrets);
        secrets
            .get_mut("db")
            .unwrap()
            .insert("url".into(), b"postgres://b".to_vec());
        assert_ne!(before, of_pod_inputs(&config, &secrets));
    }

    #[test]
    fn short_is_stable_and_truncated() {
        let one = short(&["larder:1", "db"], 8);
        assert_eq!(one, short(&["larder:1", "db"], 8));
        assert_ne!(one, short(&["larder:2", "db"], 8));
        assert_eq!(one.len(), 8);
    }
}
