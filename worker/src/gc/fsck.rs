//! `larder fsck`: is every object a live root or pin reaches really in the bucket?

use std::collections::HashMap;

use futures::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{fsck::live_objects, Db, DbError};
use crate::nix::NixHash;
use crate::storage::{Conditions, Storage, StorageError};

/// What to check beyond presence.
#[derive(Debug, Clone, Copy, Default)]
pub struct FsckOptions {
    /// Compare stored sizes with the sizes pushers declared.
    pub sizes: bool,
    /// Download every object with a declared hash and compare (slow: reads everything).
    pub checksums: bool,
}

/// The findings; the run failed when any list is non-empty.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct FsckReport {
    /// Objects reachable from a live root or pin.
    pub live_objects: u64,
    /// Reachable keys with no object row (a reference to something never committed).
    pub missing_rows: Vec<String>,
    /// Reachable keys the bucket lacks.
    pub missing_objects: Vec<String>,
    /// Keys whose stored size differs from the declared one.
    pub size_mismatches: Vec<String>,
    /// Keys whose bytes do not hash to the declared file hash.
    pub checksum_mismatches: Vec<String>,
    /// Bytes downloaded for checksums.
    pub bytes_verified: u64,
}

impl FsckReport {
    /// Whether everything checked out.
    pub fn is_clean(&self) -> bool {
        self.missing_rows.is_empty()
            && self.missing_objects.is_empty()
            && self.size_mismatches.is_empty()
            && self.checksum_mismatches.is_empty()
    }
}

/// Why fsck could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum FsckError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Checks the bucket against the database. Holds every listed key in memory (about
/// 100 bytes each: 300 MB for 3M objects).
pub async fn run(
    db: &Db,
    storage: &Storage,
    options: FsckOptions,
    progress: &dyn Fn(u64),
) -> Result<FsckReport, FsckError> {
    let live = live_objects(db).await?;
    let mut listed: HashMap<String, u64> = HashMap::new();
    let mut stream = storage.list("");
    while let Some(object) = stream.try_next().await? {
        listed.insert(object.key, object.size);
    }
    let mut report = FsckReport {
        live_objects: live.len() as u64,
        ..FsckReport::default()
    };
    for object in &live {
        if !object.has_row {
            report.missing_rows.push(object.key.clone());
        }
        if !check_presence(object, &listed, options, &mut report) || !options.checksums {
            continue;
        }
        let Some(declared) = object.file_hash.as_deref() else {
            continue;
        };
        let Ok(expected) = NixHash::parse(declared) else {
            report.checksum_mismatches.push(object.key.clone());
            continue;
        };
        let got = storage
            .get(&object.key, None, &Conditions::default())
            .await?;
        let mut hasher = Sha256::new();
        let mut body = got.body;
        while let Some(chunk) = body.try_next().await? {
            report.bytes_verified += chunk.len() as u64;
            progress(chunk.len() as u64);
            hasher.update(&chunk);
        }
        if hasher.finalize().as_slice() != expected.digest() {
            report.checksum_mismatches.push(object.key.clone());
        }
    }
    Ok(report)
}

/// Records presence and size findings; true when the object is there to be read.
fn check_presence(
    object: &crate::db::fsck::LiveObject,
    listed: &HashMap<String, u64>,
    options: FsckOptions,
    report: &mut FsckReport,
) -> bool {
    match listed.get(&object.key) {
        None => {
            report.missing_objects.push(object.key.clone());
            false
        }
        Some(&size) => {
            let declared = object.file_size.and_then(|s| u64::try_from(s).ok());
            if options.sizes && declared.is_some_and(|d| d != size) {
                report.size_mismatches.push(object.key.clone());
            }
            true
        }
    }
}
