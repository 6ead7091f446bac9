//! Skipping paths the target cache already has, when it publishes a binary cache index:
//! they are not read or compressed, only declared in the pending closure (by the keys
//! their NarHash and hash part name, so GC keeps them for the push). If the cache then
//! asks for any of their objects after all, the index was wrong and the push starts over
//! without it.

use std::collections::{BTreeMap, BTreeSet};

use ruint::aliases::U160;

use super::closure::PathInfo;
use super::objects::{self, PathObjects, NAR_COMPRESSION};
use super::wire::{ObjectRequest, PendingClosureRequest};
use crate::index::client::IndexClient;
use crate::index::hash::parse_hash;
use crate::index::query::Answer;
use crate::nix::{ObjectKey, ObjectType, StorePath};

/// Splits `infos` into the paths to prepare and those the cache's index says it has
/// (present, or added since the last build). No index, or an unreadable one, skips nothing.
pub async fn split(
    http: &reqwest::Client,
    server: &str,
    token: Option<String>,
    infos: Vec<PathInfo>,
) -> (Vec<PathInfo>, BTreeMap<StorePath, PathInfo>) {
    let Ok(client) = IndexClient::new(http.clone(), server, token) else {
        return (infos, BTreeMap::new());
    };
    let manifest = match client.manifest().await {
        Ok(Some(m)) => m,
        Ok(None) => return (infos, BTreeMap::new()),
        Err(e) => {
            tracing::debug!("not using the cache's index: {e}");
            return (infos, BTreeMap::new());
        }
    };
    let hashes: Vec<U160> = infos
        .iter()
        .map(|i| parse_hash(i.path.hash_part()).unwrap_or_default())
        .collect();
    let answers = client.query(&manifest, &hashes).await;
    let mut todo = Vec::new();
    let mut cached = BTreeMap::new();
    for (info, answer) in infos.into_iter().zip(answers) {
        match answer {
            Answer::Present | Answer::ProbablyPresent => {
                cached.insert(info.path.clone(), info);
            }
            Answer::Absent | Answer::Unknown => todo.push(info),
        }
    }
    (todo, cached)
}

/// The objects a cached path declares: its narinfo (with the references a push records),
/// its NAR and its listing, without file hashes (nothing was read to know them).
pub fn cached_objects(info: &PathInfo) -> Vec<ObjectRequest> {
    let nar = ObjectKey::nar(&info.nar_hash, NAR_COMPRESSION).into_string();
    let listing = ObjectKey::listing(&info.path).into_string();
    let mut refs: BTreeSet<String> = info
        .references
        .iter()
        .map(|r| ObjectKey::narinfo(r).into_string())
        .collect();
    refs.insert(nar.clone());
    refs.insert(listing.clone());
    let leaf = |key: String, kind, nar_size| ObjectRequest {
        key,
        kind,
        refs: Vec::new(),
        nar_size,
        file_hash: None,
        file_size: None,
    };
    vec![
        ObjectRequest {
            key: ObjectKey::narinfo(&info.path).into_string(),
            kind: ObjectType::Narinfo,
            refs: refs.into_iter().collect(),
            nar_size: None,
            file_hash: None,
            file_size: None,
        },
        leaf(nar, ObjectType::Nar, Some(info.nar_size)),
        leaf(listing, ObjectType::Listing, None),
    ]
}

/// The `pending_closures` request for `root` over prepared and cached paths alike.
pub fn closure_request(
    root: &StorePath,
    paths: &BTreeMap<StorePath, PathObjects>,
    cached: &BTreeMap<StorePath, PathInfo>,
) -> PendingClosureRequest {
    let mut request = objects::closure_request(root, paths);
    if cached.is_empty() {
        return request;
    }
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    while let Some(path) = stack.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let references = match (paths.get(&path), cached.get(&path)) {
            (Some(p), _) => &p.info.references,
            (None, Some(info)) => {
                request.objects.extend(cached_objects(info));
                &info.references
            }
            (None, None) => continue,
        };
        stack.extend(references.iter().cloned());
    }
    request
}

/// Whether the cache asked to upload an object of a path its index said it has.
pub fn index_was_wrong<'a>(
    cached: &BTreeMap<StorePath, PathInfo>,
    pending_keys: impl IntoIterator<Item = &'a String>,
) -> bool {
    let keys: BTreeSet<String> = cached
        .values()
        .flat_map(cached_objects)
        .map(|o| o.key)
        .collect();
    pending_keys.into_iter().any(|k| keys.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nix::NixHash;

    fn sp(c: char, name: &str) -> StorePath {
        StorePath::from_basename(&format!("{}-{name}", c.to_string().repeat(32)))
            .unwrap_or_else(|_| unreachable!())
    }

    fn info(path: StorePath, refs: &[StorePath]) -> PathInfo {
        PathInfo {
            nar_hash: NixHash::of(path.name().as_bytes()),
            path,
            nar_size: 100,
            references: refs.to_vec(),
            deriver: None,
            ca: None,
            signatures: vec![],
        }
    }

    #[test]
    fn cached_paths_are_declared_through_the_closure() {
        // root (to prepare) -> lib (cached) -> libc (cached, reached only through lib)
        let libc = sp('1', "libc");
        let lib = sp('2', "lib");
        let root = sp('3', "root");
        let mut cached = BTreeMap::new();
        cached.insert(libc.clone(), info(libc.clone(), &[]));
        cached.insert(lib.clone(), info(lib.clone(), std::slice::from_ref(&libc)));
        let request = closure_request(&root, &BTreeMap::new(), &cached);
        // root is not prepared (not in `paths`): only what it reaches that is cached.
        assert!(request.objects.is_empty());
        let request = closure_request(&lib, &BTreeMap::new(), &cached);
        let keys: Vec<&str> = request.objects.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys.len(), 6, "{keys:?}");
        assert!(keys.contains(&format!("{}.narinfo", libc.hash_part()).as_str()));
        let narinfo = &request.objects[0];
        assert_eq!(narinfo.kind, ObjectType::Narinfo);
        assert!(narinfo
            .refs
            .contains(&format!("{}.narinfo", libc.hash_part())));
        assert!(request.objects.iter().all(|o| o.file_hash.is_none()));

        let nar = request.objects[1].key.clone();
        assert!(index_was_wrong(&cached, [&nar]));
        assert!(!index_was_wrong(&cached, [&"other.narinfo".to_string()]));
    }
}
