//! The index over HTTP, as a client sees it: the read proxy serves index files with the
//! format's caching headers and refuses every other path under `nix-cache-index/`,
//! `nix-cache-info` carries the `Index*` lines, and the client answers present / absent /
//! probably-present from shards and journal — and unknown, never absent, when it cannot
//! read them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

mod index_support;

use std::time::Duration;

use index_support::{collect, dir_store, hashes, insert_narinfos, push_hashes, sqlite};
use larder_worker::auth::{Scope, Tokens};
use larder_worker::db::Db;
use larder_worker::index::build::{self, BuildOptions};
use larder_worker::index::client::IndexClient;
use larder_worker::index::hash::parse_hash;
use larder_worker::index::plan::JournalTiming;
use larder_worker::index::publish::{self, PublisherConfig};
use larder_worker::index::query::Answer;
use larder_worker::server::state::{AppState, ReadOptions};
use larder_worker::storage::{PutBody, PutOptions, Storage};
use ruint::aliases::U160;
use time::OffsetDateTime;

struct Served {
    url: String,
    db: Db,
    storage: Storage,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

async fn serve() -> Served {
    let (d1, db) = sqlite().await;
    let (d2, storage) = dir_store().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let state = AppState::new(
        db.clone(),
        storage.clone(),
        vec![],
        Tokens::single("t", &[Scope::Push], "test"),
        url.clone(),
        ReadOptions::default(),
    );
    let app = larder_worker::server::router(state);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Served {
        url,
        db,
        storage,
        _dirs: (d1, d2),
    }
}

impl Served {
    async fn build(&self) {
        let options = BuildOptions {
            public_url: self.url.clone(),
            timing: JournalTiming::default(),
            grace: Duration::from_secs(3600),
            bloom_rate: 0.01,
            concurrency: 4,
            progress: false,
        };
        build::run(&self.db, &self.storage, &options).await.unwrap();
    }

    async fn publish(&self) {
        let config = PublisherConfig {
            public_url: self.url.clone(),
            timing: JournalTiming::default(),
            interval: Duration::from_secs(1),
        };
        publish::tick(&self.db, &self.storage, &config, OffsetDateTime::now_utc())
            .await
            .unwrap();
    }

    fn client(&self) -> IndexClient {
        IndexClient::new(reqwest::Client::new(), &self.url, None).unwrap()
    }

    async fn ask(&self, hashes: &[String]) -> (Vec<Answer>, u64) {
        let client = self.client();
        let manifest = client.manifest().await.unwrap().unwrap();
        let values: Vec<U160> = hashes.iter().map(|h| parse_hash(h).unwrap()).collect();
        let answers = client.query(&manifest, &values).await;
        (answers, client.requests())
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("{}{path}", self.url)).await.unwrap()
    }
}

fn header(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn files_are_served_with_their_caching_headers_and_nothing_else_is() {
    let s = serve().await;
    let before = s.get("/nix-cache-info").await.text().await.unwrap();
    assert!(!before.contains("Index"), "{before}");
    insert_narinfos(&s.db, &hashes(1, 50)).await;
    s.build().await;
    s.publish().await;

    let info = s.get("/nix-cache-info").await;
    assert_eq!(header(&info, "cache-control"), "public, max-age=60");
    let etag = header(&info, "etag");
    let text = info.text().await.unwrap();
    for line in [
        "IndexVersion: 1",
        "IndexFormat: hlssi",
        "IndexItemCount: 50",
        "IndexShardingDepth: 0",
        "IndexEpochCurrent: 1",
        "IndexEpochPrevious: 0",
        "BloomFilter: nix-cache-index/bloom.bin",
        &format!("IndexShardsBase: {}/nix-cache-index/shards/", s.url),
    ] {
        assert!(text.contains(line), "{line} missing from {text}");
    }
    let again = reqwest::Client::new()
        .get(format!("{}/nix-cache-info", s.url))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    let shard = s.get("/nix-cache-index/shards/1/root.idx.zst").await;
    assert_eq!(shard.status(), 200);
    assert_eq!(
        header(&shard, "cache-control"),
        "public, max-age=31536000, immutable"
    );
    assert!(!header(&shard, "etag").is_empty());
    let manifest = s.get("/nix-cache-index/manifest.json").await;
    assert_eq!(header(&manifest, "cache-control"), "public, max-age=60");
    assert_eq!(header(&manifest, "content-type"), "application/json");
    let sums = s.get("/nix-cache-index/deltas/checksums/1.json").await;
    assert_eq!(sums.status(), 200);
    push_hashes(&s.db, &hashes(2, 1), 1).await;
    s.publish().await;
    let text = s.get("/nix-cache-info").await.text().await.unwrap();
    let segment = text
        .lines()
        .find_map(|l| l.strip_prefix("IndexJournalCurrentSegment: "))
        .unwrap()
        .to_owned();
    // The writer may still be on the segment before the one the manifest names.
    let mut journal_found = false;
    for id in [
        segment.parse::<u64>().unwrap(),
        segment.parse::<u64>().unwrap() - 300,
    ] {
        let j = s.get(&format!("/nix-cache-index/journal/{id}.log")).await;
        if j.status() == 200 {
            assert_eq!(header(&j, "cache-control"), "public, max-age=5");
            journal_found = true;
        }
    }
    assert!(journal_found);

    assert_eq!(s.get("/nix-cache-index/").await.status(), 404);
    for bad in [
        "/nix-cache-index/shards/1/../../nix-cache-info",
        "/nix-cache-index/shards/1/%2e%2e/root.idx.zst",
        "/nix-cache-index/shards/01/root.idx.zst",
        "/nix-cache-index/shards/1/e6.idx.zst",
        "/nix-cache-index/journal/x.log",
        "/nix-cache-index/manifest.json.bak",
        "/nix-cache-index/shards/2/root.idx.zst",
    ] {
        let r = s.get(bad).await;
        assert_eq!(r.status(), 404, "{bad}");
        assert_eq!(header(&r, "cache-control"), "public, max-age=5", "{bad}");
    }
}

#[tokio::test]
async fn the_client_answers_from_shards_then_the_journal() {
    let s = serve().await;
    // 1,200 paths: depth 1, so a query touches only the shards it needs.
    let members = hashes(1, 1200);
    insert_narinfos(&s.db, &members).await;
    s.build().await;
    let strangers = hashes(99, 20);
    let (answers, _) = s.ask(&members).await;
    assert!(answers.iter().all(|&a| a == Answer::Present));
    let (answers, requests) = s.ask(&strangers).await;
    assert!(answers.iter().all(|&a| a == Answer::Absent), "{answers:?}");
    let shards: std::collections::HashSet<char> = strangers
        .iter()
        .map(|h| h.chars().next().unwrap())
        .collect();
    // nix-cache-info, 13 journal segments (12 kept + current), the shards touched.
    assert_eq!(requests, 1 + 13 + shards.len() as u64);

    // A push and a collection follow through the journal without a rebuild.
    let new = hashes(7, 3);
    push_hashes(&s.db, &new, 1).await;
    s.publish().await;
    let (answers, _) = s.ask(&new).await;
    assert_eq!(answers, vec![Answer::ProbablyPresent; 3]);
    let gone = collect(&s.db, 2, 3).await;
    assert_eq!(gone.len(), 3);
    s.publish().await;
    let (answers, _) = s.ask(&new).await;
    assert_eq!(answers, vec![Answer::Absent; 3]);
}

#[tokio::test]
async fn unreadable_indexes_answer_unknown_never_absent() {
    let s = serve().await;
    insert_narinfos(&s.db, &hashes(1, 10)).await;
    s.build().await;
    let client = s.client();
    let manifest = client.manifest().await.unwrap().unwrap();
    let stranger = parse_hash(&hashes(5, 1)[0]).unwrap();

    // A corrupt shard (checksum mismatch) is unusable.
    s.storage
        .put(
            "nix-cache-index/shards/1/root.idx.zst",
            PutBody::from(b"not zstd".to_vec()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.client().query(&manifest, &[stranger]).await,
        vec![Answer::Unknown]
    );
    // A journal segment that is not a journal makes everything unknown.
    s.storage
        .put(
            &format!(
                "nix-cache-index/journal/{}.log",
                manifest.journal_current_segment
            ),
            PutBody::from(b"garbage\n".to_vec()),
            &PutOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        s.client().query(&manifest, &[stranger]).await,
        vec![Answer::Unknown]
    );
    // A cache that cannot be reached.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let down = IndexClient::new(
        reqwest::Client::new(),
        &format!("http://127.0.0.1:{port}"),
        None,
    )
    .unwrap();
    assert!(down.manifest().await.is_err());
    let mut elsewhere = manifest.clone();
    elsewhere.journal_base = format!("http://127.0.0.1:{port}/nix-cache-index/journal/");
    elsewhere.shards_base = format!("http://127.0.0.1:{port}/nix-cache-index/shards/");
    assert_eq!(
        down.query(&elsewhere, &[stranger]).await,
        vec![Answer::Unknown]
    );
}
