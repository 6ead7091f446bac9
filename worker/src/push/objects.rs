//! Pure decisions of a push: which objects a path becomes, what each references, which
//! objects a closure holds, and the narinfo written for a path.

use std::collections::{BTreeMap, BTreeSet};

use super::wire::{NarinfoFields, ObjectRequest, PendingClosureRequest};
use crate::nix::{Compression, NarInfo, NixHash, ObjectKey, ObjectType, Signature, StorePath};

use super::closure::PathInfo;

/// Hash and size of bytes as they are stored (compressed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileDigest {
    /// SHA-256 of the stored bytes.
    pub hash: NixHash,
    /// Number of stored bytes.
    pub size: u64,
}

impl FileDigest {
    /// Digest of bytes held in memory.
    pub fn of(bytes: &[u8]) -> Self {
        Self {
            hash: NixHash::of(bytes),
            size: bytes.len() as u64,
        }
    }
}

/// Everything known about one path once its NAR, listing and log are prepared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathObjects {
    /// What Nix says about the path.
    pub info: PathInfo,
    /// The compressed NAR.
    pub nar: FileDigest,
    /// The zstd-compressed `.ls` listing.
    pub listing: FileDigest,
    /// The zstd-compressed build log of the deriver, when the store has one.
    pub log: Option<(ObjectKey, FileDigest)>,
}

/// The compression of every NAR this client uploads.
pub const NAR_COMPRESSION: Compression = Compression::Zstd;

impl PathObjects {
    /// `<hash>.narinfo`.
    pub fn narinfo_key(&self) -> ObjectKey {
        ObjectKey::narinfo(&self.info.path)
    }

    /// The NAR's key, as [`DeclaredPath::nar_key`].
    pub fn nar_key(&self) -> ObjectKey {
        nar_key(&self.info)
    }

    /// `<hash>.ls`.
    pub fn listing_key(&self) -> ObjectKey {
        ObjectKey::listing(&self.info.path)
    }

    /// What the worker needs to sign this path's narinfo.
    pub fn sign_fields(&self) -> NarinfoFields {
        NarinfoFields {
            store_path: self.info.path.to_absolute(),
            url: Some(self.nar_key().into_string()),
            compression: Some(NAR_COMPRESSION.as_str().to_string()),
            nar_hash: self.info.nar_hash.to_string(),
            nar_size: self.info.nar_size,
            references: self
                .info
                .references
                .iter()
                .map(StorePath::to_absolute)
                .collect(),
        }
    }

    /// The narinfo to upload: the worker's signatures first, then those the local store
    /// already holds (so keys trusted for the original cache keep working).
    pub fn narinfo(&self, worker_signatures: &[Signature]) -> NarInfo {
        let mut signatures: Vec<Signature> = worker_signatures.to_vec();
        for sig in &self.info.signatures {
            // A signature the local store holds but Larder cannot parse is dropped, not fatal.
            if let Ok(sig) = Signature::parse(sig) {
                if !signatures.contains(&sig) {
                    signatures.push(sig);
                }
            }
        }
        let mut references = self.info.references.clone();
        references.sort();
        references.dedup();
        NarInfo {
            store_path: self.info.path.clone(),
            url: self.nar_key().into_string(),
            compression: NAR_COMPRESSION,
            file_hash: Some(self.nar.hash),
            file_size: Some(self.nar.size),
            nar_hash: self.info.nar_hash,
            nar_size: self.info.nar_size,
            references,
            deriver: self.info.deriver.clone(),
            signatures,
            ca: self.info.ca.clone(),
        }
    }
}

fn nar_key(info: &PathInfo) -> ObjectKey {
    ObjectKey::nar(&info.nar_hash, NAR_COMPRESSION)
}

/// A path as a push declares it before reading it: what Nix says about it, and the key
/// of its build log when the store has one. Its listing is always declared: the push
/// makes one for every path it reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeclaredPath {
    /// What Nix says about the path.
    pub info: PathInfo,
    /// `log/<deriver>`, when the local store has the deriver's build log.
    pub log: Option<ObjectKey>,
}

impl DeclaredPath {
    /// `<hash>.narinfo`.
    pub fn narinfo_key(&self) -> ObjectKey {
        ObjectKey::narinfo(&self.info.path)
    }

    /// `nar/<NarHash base32>.nar.zst`, as niks3 names it.
    pub fn nar_key(&self) -> ObjectKey {
        nar_key(&self.info)
    }

    /// `<hash>.ls`.
    pub fn listing_key(&self) -> ObjectKey {
        ObjectKey::listing(&self.info.path)
    }

    /// The keys of the objects that are not the narinfo: NAR, listing, log.
    pub fn leaf_keys(&self) -> Vec<String> {
        let mut keys = vec![
            self.nar_key().into_string(),
            self.listing_key().into_string(),
        ];
        keys.extend(self.log.iter().map(|k| k.as_str().to_string()));
        keys
    }

    /// The objects this path uploads, each with its references: the narinfo references
    /// every referenced path's narinfo, its own NAR and its listing; the rest nothing.
    /// No file hashes: they are declared per object once known (`/files`).
    pub fn object_requests(&self) -> Vec<ObjectRequest> {
        let mut narinfo_refs: BTreeSet<String> = self
            .info
            .references
            .iter()
            .map(|r| ObjectKey::narinfo(r).into_string())
            .collect();
        narinfo_refs.insert(self.nar_key().into_string());
        narinfo_refs.insert(self.listing_key().into_string());
        let leaf = |key: ObjectKey, nar_size| ObjectRequest {
            kind: key.object_type(),
            key: key.into_string(),
            refs: Vec::new(),
            nar_size,
            file_hash: None,
            file_size: None,
        };
        let mut out = vec![
            ObjectRequest {
                key: self.narinfo_key().into_string(),
                kind: ObjectType::Narinfo,
                refs: narinfo_refs.into_iter().collect(),
                nar_size: None,
                file_hash: None,
                file_size: None,
            },
            leaf(self.nar_key(), Some(self.info.nar_size)),
            leaf(self.listing_key(), None),
        ];
        out.extend(self.log.clone().map(|k| leaf(k, None)));
        out
    }
}

/// The `pending_closures` request for `root`: the objects of every path reachable from it
/// through references, among `paths` (a path outside `paths` is skipped: Nix listed the
/// whole closure, so that cannot happen unless the store changed meanwhile).
pub fn closure_request(
    root: &StorePath,
    paths: &BTreeMap<StorePath, DeclaredPath>,
) -> PendingClosureRequest {
    let mut seen = BTreeSet::new();
    let mut stack = vec![root.clone()];
    let mut objects = Vec::new();
    while let Some(path) = stack.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Some(p) = paths.get(&path) else { continue };
        objects.extend(p.object_requests());
        stack.extend(p.info.references.iter().cloned());
    }
    PendingClosureRequest {
        closure: ObjectKey::narinfo(root).into_string(),
        objects,
        verify_s3: false,
    }
}

/// The paths a push must read, biggest first (so no big NAR is left to compress at the
/// end), each with the pending objects it uploads. A path is read when any of its
/// objects is pending: a pending narinfo needs its NAR's file hash even when the NAR
/// is present. An object two paths share (one NAR for two paths) goes up once.
pub fn work(
    paths: &BTreeMap<StorePath, DeclaredPath>,
    pending: &BTreeSet<String>,
) -> Vec<(StorePath, Vec<String>)> {
    let mut claimed = BTreeSet::new();
    let mut out: Vec<(u64, StorePath, Vec<String>)> = Vec::new();
    for p in paths.values() {
        let narinfo_pending = pending.contains(p.narinfo_key().as_str());
        let leaves: Vec<String> = p
            .leaf_keys()
            .into_iter()
            .filter(|k| pending.contains(k) && claimed.insert(k.clone()))
            .collect();
        if narinfo_pending || !leaves.is_empty() {
            out.push((p.info.nar_size, p.info.path.clone(), leaves));
        }
    }
    out.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    out.into_iter().map(|(_, p, l)| (p, l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sp(hash_char: char, name: &str) -> StorePath {
        StorePath::from_basename(&format!("{}-{name}", hash_char.to_string().repeat(32))).unwrap()
    }

    fn info(hash_char: char, name: &str, refs: &[StorePath], nar_size: u64) -> PathInfo {
        PathInfo {
            path: sp(hash_char, name),
            nar_hash: NixHash::of(name.as_bytes()),
            nar_size,
            references: refs.to_vec(),
            deriver: Some(sp('d', &format!("{name}.drv"))),
            ca: None,
            signatures: vec![],
        }
    }

    fn declared(hash_char: char, name: &str, refs: &[StorePath], with_log: bool) -> DeclaredPath {
        let info = info(hash_char, name, refs, 1000);
        let log = with_log.then(|| ObjectKey::build_log(info.deriver.as_ref().unwrap()).unwrap());
        DeclaredPath { info, log }
    }

    fn path(hash_char: char, name: &str, refs: &[StorePath], with_log: bool) -> PathObjects {
        let d = declared(hash_char, name, refs, with_log);
        PathObjects {
            info: d.info,
            nar: FileDigest::of(b"compressed nar"),
            listing: FileDigest::of(b"ls"),
            log: d.log.map(|k| (k, FileDigest::of(b"log"))),
        }
    }

    #[test]
    fn objects_and_refs_follow_niks3_wire() {
        let dep = sp('b', "dep");
        let p = declared('a', "app", &[dep.clone(), sp('a', "app")], true);
        let objects = p.object_requests();
        let keys: Vec<&str> = objects.iter().map(|o| o.key.as_str()).collect();
        let nar_key = format!("nar/{}.nar.zst", NixHash::of(b"app").to_base32());
        let a = "a".repeat(32);
        let b = "b".repeat(32);
        let log = format!("log/{}-app.drv", "d".repeat(32));
        assert_eq!(
            keys,
            [
                format!("{a}.narinfo"),
                nar_key.clone(),
                format!("{a}.ls"),
                log.clone()
            ]
        );
        assert_eq!(p.leaf_keys(), [nar_key.clone(), format!("{a}.ls"), log]);
        // The narinfo references its dependency's narinfo, itself, its NAR and listing.
        let mut expected = vec![
            format!("{a}.narinfo"),
            format!("{a}.ls"),
            format!("{b}.narinfo"),
            nar_key,
        ];
        expected.sort();
        assert_eq!(objects[0].refs, expected);
        assert_eq!(objects[0].kind, ObjectType::Narinfo);
        // Nothing is read yet: no file hashes; leaves reference nothing.
        for o in &objects {
            assert_eq!((o.file_hash.as_deref(), o.file_size), (None, None));
        }
        for leaf in &objects[1..] {
            assert!(leaf.refs.is_empty());
        }
        assert_eq!(objects[1].kind, ObjectType::Nar);
        assert_eq!(objects[1].nar_size, Some(1000));
        assert_eq!(objects[2].kind, ObjectType::Listing);
        assert_eq!(objects[3].kind, ObjectType::BuildLog);
        let without_log = declared('a', "app", &[], false);
        assert_eq!(without_log.object_requests().len(), 3);
    }

    #[test]
    fn a_closure_holds_exactly_what_its_root_reaches() {
        let base = declared('c', "base", &[], false);
        let lib = declared('b', "lib", std::slice::from_ref(&base.info.path), false);
        let app = declared('a', "app", &[lib.info.path.clone(), sp('a', "app")], true);
        let other = declared('f', "other", &[], false);
        let all: BTreeMap<StorePath, DeclaredPath> = [&base, &lib, &app, &other]
            .into_iter()
            .map(|p| (p.info.path.clone(), p.clone()))
            .collect();
        let req = closure_request(&app.info.path, &all);
        assert_eq!(req.closure, format!("{}.narinfo", "a".repeat(32)));
        let narinfos: BTreeSet<&str> = req
            .objects
            .iter()
            .filter(|o| o.kind == ObjectType::Narinfo)
            .map(|o| o.key.as_str())
            .collect();
        let expect: BTreeSet<String> = ['a', 'b', 'c']
            .iter()
            .map(|c| format!("{}.narinfo", c.to_string().repeat(32)))
            .collect();
        assert_eq!(narinfos, expect.iter().map(String::as_str).collect());
        assert_eq!(req.objects.len(), 4 + 3 + 3);
        let req = closure_request(&base.info.path, &all);
        assert_eq!(req.objects.len(), 3);
    }

    #[test]
    fn work_reads_what_has_anything_pending_biggest_first() {
        let small = DeclaredPath {
            info: info('a', "small", &[], 10),
            log: None,
        };
        let big = DeclaredPath {
            info: info('b', "big", &[], 10_000),
            log: None,
        };
        // Same NAR as `small` under another name: the NAR goes up once.
        let mut twin = DeclaredPath {
            info: info('c', "twin", &[], 10),
            log: None,
        };
        twin.info.nar_hash = small.info.nar_hash;
        let cached = DeclaredPath {
            info: info('g', "cached", &[], 1_000_000),
            log: None,
        };
        // Only its narinfo is pending (its NAR is present): read for the file hash.
        let relabelled = DeclaredPath {
            info: info('f', "relabelled", &[], 50),
            log: None,
        };
        let all: BTreeMap<StorePath, DeclaredPath> = [&small, &big, &twin, &cached, &relabelled]
            .into_iter()
            .map(|p| (p.info.path.clone(), p.clone()))
            .collect();
        let mut pending = BTreeSet::new();
        for p in [&small, &big, &twin] {
            pending.insert(p.narinfo_key().into_string());
            pending.extend(p.leaf_keys());
        }
        pending.insert(relabelled.narinfo_key().into_string());
        let work = work(&all, &pending);
        let order: Vec<&str> = work.iter().map(|(p, _)| p.name()).collect();
        assert_eq!(order, ["big", "relabelled", "small", "twin"]);
        assert_eq!(work[0].1, big.leaf_keys());
        assert!(work[1].1.is_empty());
        assert_eq!(work[2].1, small.leaf_keys());
        assert_eq!(work[3].1, [twin.listing_key().into_string()]);
    }

    #[test]
    fn narinfo_carries_file_hash_and_signatures() {
        let dep = sp('b', "dep");
        let mut p = path('a', "app", std::slice::from_ref(&dep), false);
        p.info.ca =
            Some("fixed:r:sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf".into());
        let local = "test-1:3luLeDGd3VvF8hrARR3zPyVQbfeHMEM6caN5WMW0Sajl43X93yE/mfKsCcD6Qlwl76pba8vd40nsnju3M3GdAA==";
        p.info.signatures = vec![local.into(), "garbage".into()];
        let key = crate::nix::SecretKey::from_seed("cache-1", [7; 32]).unwrap();
        let worker_sig = key.sign(&p.narinfo(&[]).fingerprint());
        let info = p.narinfo(std::slice::from_ref(&worker_sig));
        let text = info.render();
        let nar_hash = NixHash::of(b"app");
        let expected = format!(
            "StorePath: /nix/store/{a}-app\nURL: nar/{nb}.nar.zst\nCompression: zstd\n\
             FileHash: {fh}\nFileSize: 14\nNarHash: {nar_hash}\nNarSize: 1000\n\
             References: {b}-dep\nDeriver: {d}-app.drv\nSig: {worker_sig}\nSig: {local}\n\
             CA: fixed:r:sha256:1vl7dq049wsjdnamn28vdimwnx3x4pb118zgyi7jk84zk9rxvypf\n",
            a = "a".repeat(32),
            b = "b".repeat(32),
            d = "d".repeat(32),
            nb = nar_hash.to_base32(),
            fh = NixHash::of(b"compressed nar"),
        );
        assert_eq!(text, expected);
        assert!(info.is_signed_by_any(&[key.public_key()]));
        let parsed = NarInfo::parse(&text).unwrap();
        assert_eq!(parsed, info);
    }

    #[test]
    fn sign_fields_match_the_narinfo_fingerprint() {
        let p = path('a', "app", &[sp('b', "dep")], false);
        let f = p.sign_fields();
        assert_eq!(f.store_path, format!("/nix/store/{}-app", "a".repeat(32)));
        assert_eq!(f.nar_hash, p.info.nar_hash.to_string());
        assert_eq!(f.references, [format!("/nix/store/{}-dep", "b".repeat(32))]);
        assert_eq!(f.compression.as_deref(), Some("zstd"));
        let fp = crate::nix::signature::fingerprint(
            &StorePath::parse(&f.store_path).unwrap(),
            &NixHash::parse(&f.nar_hash).unwrap(),
            f.nar_size,
            &[sp('b', "dep")],
        );
        assert_eq!(fp, p.narinfo(&[]).fingerprint());
    }
}
