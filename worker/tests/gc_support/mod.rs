//! Shared by the GC tests: a synthetic universe of store paths, a deterministic RNG, and
//! a cache (real `larder serve` on PostgreSQL + Garage) with a pusher speaking the raw
//! upload API and an independent checker (its own SQL and S3 clients).
#![allow(dead_code)] // each test binary uses part of this module

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use larder_e2e::garage::Bucket;
use larder_e2e::larder::{Backend, Worker};
use larder_worker::db::Db;
use larder_worker::nix::ObjectType;
use larder_worker::push::api::Api;
use larder_worker::push::retry::RetryPolicy;
use larder_worker::push::wire::{ObjectRequest, PendingClosureRequest};
use larder_worker::storage::{S3Config, S3Store, Storage};
use sqlx::{PgPool, Row};

/// splitmix64: tiny, seedable, the same sequence on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0; bias is irrelevant here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";

fn base32(rng: &mut Rng, len: usize) -> String {
    (0..len)
        .map(|_| ALPHABET[rng.below(32) as usize] as char)
        .collect()
}

/// One synthetic store path: its hash part, NAR key and the paths it references.
pub struct PathDef {
    pub hash: String,
    pub nar: String,
    pub deps: Vec<usize>,
}

/// A fixed DAG of store paths; path `i` only references paths `< i`.
pub struct Universe {
    pub paths: Vec<PathDef>,
    by_narinfo: HashMap<String, usize>,
}

impl Universe {
    pub fn new(seed: u64, n: usize) -> Self {
        let mut rng = Rng::new(seed ^ 0x5eed);
        let mut paths = Vec::with_capacity(n);
        for i in 0..n {
            let mut deps: Vec<usize> = (0..rng.below(4))
                .filter(|_| i > 0)
                .map(|_| rng.below(i as u64) as usize)
                .collect();
            deps.sort_unstable();
            deps.dedup();
            paths.push(PathDef {
                hash: base32(&mut rng, 32),
                nar: format!("nar/{}.nar.zst", base32(&mut rng, 52)),
                deps,
            });
        }
        let by_narinfo = paths
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("{}.narinfo", p.hash), i))
            .collect();
        Universe { paths, by_narinfo }
    }

    /// A universe with the given dependency lists (each only naming earlier paths).
    pub fn with_deps(seed: u64, deps: &[&[usize]]) -> Self {
        let mut universe = Universe::new(seed, deps.len());
        for (path, d) in universe.paths.iter_mut().zip(deps) {
            path.deps = d.to_vec();
        }
        universe
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn narinfo(&self, i: usize) -> String {
        format!("{}.narinfo", self.paths[i].hash)
    }

    pub fn path_of_narinfo(&self, key: &str) -> usize {
        *self
            .by_narinfo
            .get(key)
            .unwrap_or_else(|| panic!("{key} is no path of the universe"))
    }

    /// Path `root` and everything it references, transitively, sorted.
    pub fn closure(&self, root: usize) -> Vec<usize> {
        let mut seen = std::collections::BTreeSet::new();
        let mut todo = vec![root];
        while let Some(i) = todo.pop() {
            if seen.insert(i) {
                todo.extend(&self.paths[i].deps);
            }
        }
        seen.into_iter().collect()
    }

    /// Every object key the closure of `root` consists of.
    pub fn closure_keys(&self, root: usize) -> Vec<String> {
        self.closure(root)
            .into_iter()
            .flat_map(|i| {
                let p = &self.paths[i];
                [
                    format!("{}.narinfo", p.hash),
                    p.nar.clone(),
                    format!("{}.ls", p.hash),
                ]
            })
            .collect()
    }

    /// The niks3 request that starts a push of `root`'s closure.
    pub fn request(&self, root: usize) -> PendingClosureRequest {
        let mut objects = Vec::new();
        for i in self.closure(root) {
            let p = &self.paths[i];
            let mut refs = vec![p.nar.clone(), format!("{}.ls", p.hash)];
            refs.extend(p.deps.iter().map(|&d| self.narinfo(d)));
            objects.push(object(&self.narinfo(i), ObjectType::Narinfo, refs, None));
            let nar_size = Some(content(&p.nar).len() as u64);
            objects.push(object(&p.nar, ObjectType::Nar, vec![], nar_size));
            objects.push(object(
                &format!("{}.ls", p.hash),
                ObjectType::Listing,
                vec![],
                None,
            ));
        }
        PendingClosureRequest {
            closure: self.narinfo(root),
            objects,
            verify_s3: false,
        }
    }
}

fn object(key: &str, kind: ObjectType, refs: Vec<String>, nar_size: Option<u64>) -> ObjectRequest {
    ObjectRequest {
        key: key.to_string(),
        kind,
        refs,
        nar_size,
        file_hash: None,
        file_size: None,
    }
}

/// The bytes of an object: derived from its key, so every upload of a key is identical.
pub fn content(key: &str) -> Vec<u8> {
    format!("contents of {key}\n").into_bytes()
}

/// What starting a session returned.
pub struct Started {
    pub id: String,
    pub at: Instant,
    pub present: Vec<String>,
    pub to_upload: Vec<(String, String)>,
}

/// The cache's state as the checker sees it.
pub struct Snapshot {
    /// Object rows: key → marked by GC.
    pub objects: BTreeMap<String, bool>,
    /// Keys in the bucket.
    pub bucket: HashSet<String>,
    /// Root narinfo keys.
    pub roots: Vec<String>,
}

/// A worker on PostgreSQL + Garage, with the handles tests need around it.
pub struct Cache {
    pub worker: Worker,
    /// The same database and bucket, for in-process GC runs.
    pub db: Db,
    pub storage: Storage,
    pub bucket: Bucket,
    api: Api,
    http: reqwest::Client,
    checker: PgPool,
    s3: aws_sdk_s3::Client,
}

impl Cache {
    pub async fn open(test: &str) -> Cache {
        let database = larder_e2e::postgres::database(test);
        let bucket = larder_e2e::garage::bucket(test);
        let backend = Backend::Postgres {
            database: database.clone(),
            bucket: bucket.clone(),
        };
        let worker = tokio::task::block_in_place(|| Worker::start(test, backend, &[]));
        let db = Db::connect(&database).await.unwrap();
        let storage = Storage::S3(
            S3Store::new(&S3Config {
                endpoint: Some(bucket.endpoint.clone()),
                region: Some(bucket.region.clone()),
                bucket: bucket.name.clone(),
                path_style: true,
                access_key_id: Some(bucket.access_key.clone()),
                secret_access_key: Some(bucket.secret_key.clone()),
                ..S3Config::default()
            })
            .await
            .unwrap(),
        );
        let http = reqwest::Client::new();
        let retry = RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        };
        let api = Api::new(http.clone(), &worker.url, Some(worker.token.clone()), retry).unwrap();
        let checker = PgPool::connect(&database).await.unwrap();
        let s3 = bucket.client();
        Cache {
            worker,
            db,
            storage,
            bucket,
            api,
            http,
            checker,
            s3,
        }
    }

    /// `POST /api/pending_closures` for `root`'s closure.
    pub async fn begin(&self, universe: &Universe, root: usize) -> Started {
        let request = universe.request(root);
        let at = Instant::now();
        let response = self
            .api
            .start(&request)
            .await
            .unwrap_or_else(|e| panic!("start: {e}\n{}", self.worker.log()));
        let mut present = Vec::new();
        let mut to_upload = Vec::new();
        for o in &request.objects {
            match response.pending_objects.get(&o.key) {
                Some(p) => {
                    let url = p.presigned_url.clone().expect("small objects: single PUT");
                    to_upload.push((o.key.clone(), url));
                }
                None => present.push(o.key.clone()),
            }
        }
        Started {
            id: response.id,
            at,
            present,
            to_upload,
        }
    }

    /// PUTs `key`'s bytes to its presigned URL.
    pub async fn upload(&self, key: &str, url: &str) {
        let response = self.http.put(url).body(content(key)).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "PUT {key}: {}",
            response.status()
        );
    }

    /// `POST …/complete`; returns the status.
    pub async fn complete(&self, id: &str) -> u16 {
        self.http
            .post(format!(
                "{}/api/pending_closures/{id}/complete",
                self.worker.url
            ))
            .bearer_auth(&self.worker.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Rows, then bucket, then roots (see the stress test for why in that order).
    pub async fn snapshot(&self) -> Snapshot {
        let objects = sqlx::query("SELECT key, marked_epoch IS NOT NULL FROM objects")
            .fetch_all(&self.checker)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<String, _>(0), r.get::<bool, _>(1)))
            .collect();
        let mut bucket = HashSet::new();
        let mut token = None;
        loop {
            let page = self
                .s3
                .list_objects_v2()
                .bucket(&self.bucket.name)
                .set_continuation_token(token)
                .send()
                .await
                .unwrap();
            bucket.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let roots = sqlx::query("SELECT key FROM closures ORDER BY key")
            .fetch_all(&self.checker)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<String, _>(0))
            .collect();
        Snapshot {
            objects,
            bucket,
            roots,
        }
    }
}
