//! Pure decisions of the upload API: which requests are valid, how to upload each object.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::db::pending::ClosureObject;
use crate::nix::{NixHash, ObjectKey, ObjectType};

use super::wire::PendingClosureRequest;

/// NARs up to this size (by `nar_size`) get one presigned PUT; larger ones multipart.
pub const MULTIPART_THRESHOLD: u64 = 10 * 1024 * 1024;
/// The part size the initial part count is planned for (clients choose their own).
pub const PLANNED_PART_SIZE: u64 = 10 * 1024 * 1024;
/// S3's limit on parts in one upload.
pub const MAX_PARTS: i64 = 10_000;
/// Most part URLs one `request-parts` call hands out.
pub const MAX_PARTS_PER_REQUEST: i64 = 1000;
/// Most objects one closure may declare.
pub const MAX_OBJECTS: usize = 200_000;
/// Most references one object may declare.
pub const MAX_REFS: usize = 10_000;

/// Why an upload request is refused (all map to 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("the closure has no objects")]
    Empty,
    #[error("the closure has {0} objects; at most {MAX_OBJECTS} are accepted")]
    TooManyObjects(usize),
    #[error("closure key {key:?} is not a narinfo key: {reason}")]
    BadClosureKey { key: String, reason: String },
    #[error("closure root {0:?} is not among the objects")]
    RootMissing(String),
    #[error("object {key:?}: {reason}")]
    BadObject { key: String, reason: String },
    #[error("object {from:?} references {to:?}, which is not among the closure's objects; a closure must list every object it reaches")]
    DanglingRef { from: String, to: String },
    #[error("object {0:?} is listed twice with different contents")]
    Conflict(String),
    #[error("part numbers {first}..{last} are outside 1..={MAX_PARTS}")]
    BadPartRange { first: i64, last: i64 },
}

/// Object kind as stored in the database.
pub fn kind_code(kind: ObjectType) -> i64 {
    match kind {
        ObjectType::Narinfo => 0,
        ObjectType::Nar => 1,
        ObjectType::Listing => 2,
        ObjectType::BuildLog => 3,
        ObjectType::Realisation => 4,
    }
}

/// The kind a stored code stands for.
pub fn kind_from_code(code: i64) -> Option<ObjectType> {
    [
        ObjectType::Narinfo,
        ObjectType::Nar,
        ObjectType::Listing,
        ObjectType::BuildLog,
        ObjectType::Realisation,
    ]
    .into_iter()
    .find(|k| kind_code(*k) == code)
}

/// Validates a `pending_closures` request into the objects to record, sorted by key.
pub fn closure_objects(req: &PendingClosureRequest) -> Result<Vec<ClosureObject>, PlanError> {
    if req.objects.is_empty() {
        return Err(PlanError::Empty);
    }
    if req.objects.len() > MAX_OBJECTS {
        return Err(PlanError::TooManyObjects(req.objects.len()));
    }
    ObjectKey::parse_as(&req.closure, ObjectType::Narinfo).map_err(|e| {
        PlanError::BadClosureKey {
            key: crate::nix::preview(&req.closure),
            reason: e.to_string(),
        }
    })?;
    let mut by_key: BTreeMap<String, ClosureObject> = BTreeMap::new();
    for object in &req.objects {
        let bad = |reason: String| PlanError::BadObject {
            key: crate::nix::preview(&object.key),
            reason,
        };
        ObjectKey::parse_as(&object.key, object.kind).map_err(|e| bad(e.to_string()))?;
        if object.refs.len() > MAX_REFS {
            return Err(bad(format!(
                "{} references; at most {MAX_REFS}",
                object.refs.len()
            )));
        }
        let mut refs = Vec::with_capacity(object.refs.len());
        for r in &object.refs {
            ObjectKey::parse(r)
                .map_err(|e| bad(format!("reference {}: {e}", crate::nix::preview(r))))?;
            refs.push(r.clone());
        }
        refs.sort();
        refs.dedup();
        let file_hash = object
            .file_hash
            .as_deref()
            .map(|h| NixHash::parse(h).map(|h| h.to_string()))
            .transpose()
            .map_err(|e| bad(format!("file_hash: {e}")))?;
        let to_i64 = |v: Option<u64>, what: &str| {
            v.map(|v| i64::try_from(v).map_err(|_| bad(format!("{what} too large"))))
                .transpose()
        };
        let record = ClosureObject {
            key: object.key.clone(),
            kind: kind_code(object.kind),
            refs,
            nar_size: to_i64(object.nar_size, "nar_size")?,
            file_size: to_i64(object.file_size, "file_size")?,
            file_hash,
        };
        match by_key.get(&record.key) {
            Some(existing) if *existing != record => return Err(PlanError::Conflict(record.key)),
            Some(_) => {}
            None => {
                by_key.insert(record.key.clone(), record);
            }
        }
    }
    if !by_key.contains_key(&req.closure) {
        return Err(PlanError::RootMissing(req.closure.clone()));
    }
    // Completeness: a committed root must reach only objects the cache holds. The session
    // guarantees that for its own objects (uploaded, or present and protected from GC
    // while it is open); a reference outside them could name anything.
    for object in by_key.values() {
        if let Some(to) = object.refs.iter().find(|r| !by_key.contains_key(*r)) {
            return Err(PlanError::DanglingRef {
                from: object.key.clone(),
                to: to.clone(),
            });
        }
    }
    Ok(by_key.into_values().collect())
}

/// How one object is to be uploaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadPlan {
    /// One presigned PUT.
    Single,
    /// A multipart upload with this many part URLs handed out at first.
    Multipart { initial_parts: i64 },
}

/// Single PUT up to the threshold, multipart above with about 1.2 × the parts a
/// 10 MiB part size needs (2…100), as niks3 clients expect.
pub fn upload_plan(kind: ObjectType, nar_size: Option<u64>) -> UploadPlan {
    match (kind, nar_size) {
        (ObjectType::Nar, Some(size)) if size > MULTIPART_THRESHOLD => {
            let needed = size.div_ceil(PLANNED_PART_SIZE);
            let with_margin = (needed * 6).div_ceil(5);
            UploadPlan::Multipart {
                initial_parts: with_margin.clamp(2, 100) as i64,
            }
        }
        _ => UploadPlan::Single,
    }
}

/// Validates a request for part URLs: `num_parts` is clamped to 1…1000 and the range may
/// not pass part 10,000. Returns the part numbers to presign.
pub fn part_range(start: i64, num_parts: i64) -> Result<std::ops::RangeInclusive<i64>, PlanError> {
    let count = num_parts.clamp(1, MAX_PARTS_PER_REQUEST);
    let last = start.saturating_add(count - 1);
    if start < 1 || last > MAX_PARTS {
        return Err(PlanError::BadPartRange { first: start, last });
    }
    Ok(start..=last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upload::wire::ObjectRequest;

    const H: &str = "0123456789abcdfghijklmnpqrsvwxyz";
    const N: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";

    fn object(key: &str, kind: ObjectType, refs: &[&str]) -> ObjectRequest {
        ObjectRequest {
            key: key.into(),
            kind,
            refs: refs.iter().map(|r| r.to_string()).collect(),
            nar_size: Some(100),
            file_hash: None,
            file_size: None,
        }
    }

    fn request(objects: Vec<ObjectRequest>) -> PendingClosureRequest {
        PendingClosureRequest {
            closure: format!("{H}.narinfo"),
            objects,
            verify_s3: false,
        }
    }

    fn valid() -> Vec<ObjectRequest> {
        let nar = format!("nar/{N}.nar.zst");
        vec![
            object(
                &format!("{H}.narinfo"),
                ObjectType::Narinfo,
                &[&nar, &format!("{H}.ls")],
            ),
            object(&nar, ObjectType::Nar, &[]),
            object(&format!("{H}.ls"), ObjectType::Listing, &[]),
        ]
    }

    #[test]
    fn a_valid_closure_becomes_sorted_objects_with_kind_codes() {
        let objects = closure_objects(&request(valid())).unwrap();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let narinfo = objects
            .iter()
            .find(|o| o.key.ends_with(".narinfo"))
            .unwrap();
        assert_eq!(narinfo.kind, 0);
        assert_eq!(narinfo.refs.len(), 2);
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        assert_eq!(closure_objects(&request(vec![])), Err(PlanError::Empty));

        let mut traversal = valid();
        traversal.push(object("../etc/passwd", ObjectType::Listing, &[]));
        assert!(matches!(
            closure_objects(&request(traversal)),
            Err(PlanError::BadObject { .. })
        ));

        let mut wrong_kind = valid();
        wrong_kind.push(object(&format!("{H}.ls"), ObjectType::Nar, &[]));
        assert!(closure_objects(&request(wrong_kind)).is_err());

        let mut bad_ref = valid();
        bad_ref[0].refs.push("/absolute".into());
        assert!(matches!(
            closure_objects(&request(bad_ref)),
            Err(PlanError::BadObject { .. })
        ));

        let mut dotted = valid();
        dotted.push(object("log/..zlogout.drv", ObjectType::BuildLog, &[]));
        match closure_objects(&request(dotted)) {
            Err(PlanError::BadObject { reason, .. }) => {
                assert!(reason.contains("starting with `.`"), "{reason}")
            }
            other => panic!("a key storage cannot hold was accepted: {other:?}"),
        }

        // A reference to an object the closure does not list.
        let mut dangling = valid();
        dangling[0].refs.push(format!("{}.narinfo", "1".repeat(32)));
        match closure_objects(&request(dangling)) {
            Err(PlanError::DanglingRef { from, to }) => {
                assert_eq!(from, valid()[0].key);
                assert_eq!(to, format!("{}.narinfo", "1".repeat(32)));
            }
            other => panic!("a dangling reference was accepted: {other:?}"),
        }

        let mut server_owned = valid();
        server_owned.push(object("nix-cache-info", ObjectType::Narinfo, &[]));
        assert!(closure_objects(&request(server_owned)).is_err());

        let mut no_root = request(valid());
        no_root.closure = format!("{}.narinfo", "1".repeat(32));
        assert_eq!(
            closure_objects(&no_root),
            Err(PlanError::RootMissing(no_root.closure.clone()))
        );

        let mut conflict = valid();
        let mut twin = conflict[1].clone();
        twin.nar_size = Some(5);
        conflict.push(twin);
        assert!(matches!(
            closure_objects(&request(conflict)),
            Err(PlanError::Conflict(_))
        ));

        let mut bad_hash = valid();
        bad_hash[1].file_hash = Some("sha256:nothex".into());
        assert!(closure_objects(&request(bad_hash)).is_err());
    }

    #[test]
    fn identical_duplicates_are_merged() {
        let mut twice = valid();
        twice.push(twice[1].clone());
        assert_eq!(closure_objects(&request(twice)).unwrap().len(), 3);
    }

    #[test]
    fn multipart_above_ten_mib_with_margin() {
        assert_eq!(
            upload_plan(ObjectType::Nar, Some(MULTIPART_THRESHOLD)),
            UploadPlan::Single
        );
        assert_eq!(
            upload_plan(ObjectType::Narinfo, Some(1 << 40)),
            UploadPlan::Single
        );
        assert_eq!(upload_plan(ObjectType::Nar, None), UploadPlan::Single);
        assert_eq!(
            upload_plan(ObjectType::Nar, Some(MULTIPART_THRESHOLD + 1)),
            UploadPlan::Multipart { initial_parts: 3 }
        );
        assert_eq!(
            upload_plan(ObjectType::Nar, Some(100 * PLANNED_PART_SIZE)),
            UploadPlan::Multipart { initial_parts: 100 }
        );
        assert_eq!(
            upload_plan(ObjectType::Nar, Some(1 << 40)),
            UploadPlan::Multipart { initial_parts: 100 }
        );
    }

    #[test]
    fn part_ranges_stay_within_s3_limits() {
        assert_eq!(part_range(1, 5).unwrap(), 1..=5);
        assert_eq!(part_range(3, 0).unwrap(), 3..=3);
        assert_eq!(part_range(1, 5000).unwrap(), 1..=1000);
        assert!(part_range(0, 1).is_err());
        assert!(part_range(9_999, 2).is_ok());
        assert!(part_range(9_999, 3).is_err());
        assert!(part_range(i64::MAX, 1000).is_err());
    }
}
