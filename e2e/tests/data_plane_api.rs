#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! The upload API and read proxy over raw HTTP, on PostgreSQL + Garage: bad input is
//! refused with the right status and changes nothing; ranges, 304 and redirects work.

use std::collections::BTreeMap;

use larder_e2e::garage::Bucket;
use larder_e2e::larder::{Backend, Worker};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection, Row};

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const NAR: &str = "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst";

struct Fixture {
    worker: Worker,
    database: String,
    bucket: Bucket,
    http: reqwest::Client,
}

fn fixture(test: &str, extra: &[&str]) -> Fixture {
    let database = larder_e2e::postgres::database(test);
    let bucket = larder_e2e::garage::bucket(test);
    let worker = Worker::start(
        test,
        Backend::Postgres {
            database: database.clone(),
            bucket: bucket.clone(),
        },
        extra,
    );
    Fixture {
        worker,
        database,
        bucket,
        http: reqwest::Client::new(),
    }
}

impl Fixture {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.worker.url)
    }

    fn post(&self, path: &str, token: Option<&str>) -> reqwest::RequestBuilder {
        let req = self.http.post(self.url(path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    fn push_token(&self) -> Option<&str> {
        Some(&self.worker.token)
    }

    /// Starts a session with `request`; returns the answer and the session id.
    async fn start(&self, request: &Value) -> (Value, String) {
        let started = self.worker.start_session(request).await;
        let id = started["id"].as_str().unwrap().to_string();
        (started, id)
    }

    /// Completes session `id`: the status and the body.
    async fn complete(&self, id: &str) -> (u16, String) {
        let response = self
            .post(
                &format!("/api/pending_closures/{id}/complete"),
                self.push_token(),
            )
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// Rows in every table and objects in the bucket: what "changes nothing" compares.
    async fn snapshot(&self) -> (Vec<i64>, Vec<String>) {
        let mut conn = PgConnection::connect(&self.database).await.unwrap();
        let mut counts = Vec::new();
        for table in [
            "objects",
            "refs",
            "closures",
            "pending_closures",
            "pending_objects",
            "multipart_uploads",
        ] {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            counts.push(row.get::<i64, _>(0));
        }
        (counts, self.bucket.keys().await)
    }
}

fn closure_request(nar_hash: Option<&str>) -> Value {
    let mut nar = json!({"key": NAR, "type": "nar", "refs": [], "nar_size": 100});
    if let Some(h) = nar_hash {
        nar["file_hash"] = json!(h);
    }
    json!({
        "closure": format!("{HASH}.narinfo"),
        "objects": [
            {"key": format!("{HASH}.narinfo"), "type": "narinfo", "refs": [NAR, format!("{HASH}.ls")]},
            nar,
            {"key": format!("{HASH}.ls"), "type": "listing", "refs": []},
        ]
    })
}

#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let f = fixture("bad-input", &[]);
    let before = f.snapshot().await;
    let push = f.push_token();
    let read = Some(f.worker.read_token.as_str());
    let traversal = |key: &str| {
        json!({"closure": format!("{HASH}.narinfo"), "objects": [
            {"key": format!("{HASH}.narinfo"), "type": "narinfo", "refs": []},
            {"key": key, "type": "listing", "refs": []}]})
    };
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        ("no token", f.post("/api/pending_closures", None).json(&closure_request(None)), 401),
        ("wrong token", f.post("/api/pending_closures", Some("not-a-valid-token-at-all")).json(&closure_request(None)), 401),
        ("read-only token", f.post("/api/pending_closures", read).json(&closure_request(None)), 403),
        ("malformed JSON", f.post("/api/pending_closures", push).body("{\"closure\": "), 400),
        ("no objects", f.post("/api/pending_closures", push).json(&json!({"closure": format!("{HASH}.narinfo"), "objects": []})), 400),
        ("parent traversal", f.post("/api/pending_closures", push).json(&traversal("../etc/passwd")), 400),
        ("absolute key", f.post("/api/pending_closures", push).json(&traversal("/etc/passwd")), 400),
        ("encoded traversal", f.post("/api/pending_closures", push).json(&traversal("log/%2e%2e%2fx.drv")), 400),
        ("server-owned key", f.post("/api/pending_closures", push).json(&traversal("nix-cache-info")), 400),
        ("hidden segment", f.post("/api/pending_closures", push).json(&traversal("log/..zlogout.drv")), 400),
        ("reference outside the closure", f.post("/api/pending_closures", push).json(&json!({"closure": format!("{HASH}.narinfo"), "objects": [
            {"key": format!("{HASH}.narinfo"), "type": "narinfo", "refs": [format!("{}.narinfo", "1".repeat(32))]}]})), 400),
        ("unknown session sign", f.post("/api/pending_closures/999999/sign", push).json(&json!({"narinfos": {}})), 404),
        ("non-numeric session", f.post("/api/pending_closures/abc/complete", push), 404),
        ("unknown session complete", f.post("/api/pending_closures/999999/complete", push), 404),
        ("unknown multipart", f.post("/api/multipart/request-parts", push).json(&json!({"object_key": NAR, "upload_id": "nope", "start_part_number": 1, "num_parts": 2})), 404),
        ("unknown multipart complete", f.post("/api/multipart/complete", push).json(&json!({"object_key": NAR, "upload_id": "nope", "parts": [{"part_number": 1, "etag": "x"}]})), 404),
        ("gc cleanup without admin", f.http.delete(f.url("/api/pending_closures?older-than=1h")).bearer_auth(&f.worker.read_token), 403),
        ("bad duration", f.http.delete(f.url("/api/pending_closures?older-than=soon")).bearer_auth(&f.worker.token), 400),
    ];
    for (name, request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{name}: {body}");
        assert!(!body.trim().is_empty(), "{name}: error without a message");
    }
    assert_eq!(
        oversized_status(&f.worker.url, f.worker.token.as_str()).await,
        413,
        "an oversized body is refused"
    );
    assert_eq!(
        f.snapshot().await,
        before,
        "a refused request changed the database or bucket"
    );
}

/// Status of a pending-closure request declaring a 65 MiB body, sent as raw HTTP:
/// the worker must refuse it from the header alone, before the body arrives (a
/// client still streaming a body would race the early response and see a reset).
async fn oversized_status(base: &str, token: &str) -> u16 {
    let addr = larder_e2e::raw_http::authority(base);
    let head = format!(
        "POST /api/pending_closures HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{{",
        65 * 1024 * 1024
    );
    larder_e2e::raw_http::status(base, &head).await
}

#[tokio::test]
async fn bytes_that_do_not_match_the_declared_hash_are_never_committed() {
    let f = fixture("checksum", &[]);
    let body = b"the real compressed nar".to_vec();
    let digest = Sha256::digest(&body);
    let nix32 = larder_worker_free_base32(&digest);
    let (started, id) = f
        .start(&closure_request(Some(&format!("sha256:{nix32}"))))
        .await;
    let nar = &started["pending_objects"][NAR];
    let headers: BTreeMap<String, String> = serde_json::from_value(nar["headers"].clone()).unwrap();
    assert!(
        headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("x-amz-checksum-sha256")),
        "declared file_hash must be signed into the upload: {nar}"
    );
    let mut wrong = body.clone();
    wrong.push(b'!');
    assert_eq!(
        put(&f.http, nar, wrong).await,
        400,
        "Garage must refuse mismatching bytes"
    );

    let (status, text) = f.complete(&id).await;
    assert_eq!(status, 400, "{text}");
    let (counts, keys) = f.snapshot().await;
    assert_eq!(counts[0], 0, "objects were committed");
    assert_eq!(counts[2], 0, "a closure root was committed");
    assert!(keys.is_empty(), "the bucket holds {keys:?}");
}

/// PUTs `body` to the presigned upload `object` describes, with its signed headers.
async fn put(http: &reqwest::Client, object: &Value, body: Vec<u8>) -> u16 {
    let headers: BTreeMap<String, String> =
        serde_json::from_value(object["headers"].clone()).unwrap_or_default();
    let mut put = http.put(object["presigned_url"].as_str().unwrap());
    for (k, v) in &headers {
        put = put.header(k, v);
    }
    put.body(body).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn files_declared_after_the_start_bind_their_upload_and_are_committed() {
    let f = fixture("late-files", &[]);
    let (started, id) = f.start(&closure_request(None)).await;
    let files = format!("/api/pending_closures/{id}/files");
    let body = b"compressed nar bytes".to_vec();
    let hash = format!(
        "sha256:{}",
        larder_worker_free_base32(&Sha256::digest(&body))
    );
    let declare = |key: &str, hash: &str, size: usize| json!({"files": {key: {"file_hash": hash, "file_size": size}}});

    // Refused declarations record nothing.
    let before = f.snapshot().await;
    let other = format!("{}.ls", "1".repeat(32));
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "no token",
            f.post(&files, None).json(&declare(NAR, &hash, body.len())),
            401,
        ),
        (
            "read-only token",
            f.post(&files, Some(&f.worker.read_token))
                .json(&declare(NAR, &hash, body.len())),
            403,
        ),
        (
            "unknown session",
            f.post("/api/pending_closures/999999/files", f.push_token())
                .json(&declare(NAR, &hash, body.len())),
            404,
        ),
        (
            "malformed JSON",
            f.post(&files, f.push_token()).body("{\"files\": "),
            400,
        ),
        (
            "nothing declared",
            f.post(&files, f.push_token()).json(&json!({"files": {}})),
            400,
        ),
        (
            "bad hash",
            f.post(&files, f.push_token())
                .json(&declare(NAR, "sha256:nothex", 1)),
            400,
        ),
        (
            "traversal",
            f.post(&files, f.push_token())
                .json(&declare("../etc/passwd", &hash, 1)),
            400,
        ),
        (
            "not in the session",
            f.post(&files, f.push_token()).json(&json!({"files": {
            NAR: {"file_hash": hash, "file_size": body.len()},
            other.as_str(): {"file_hash": hash, "file_size": 1}}})),
            409,
        ),
    ];
    for (name, request, expected) in cases {
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, expected, "{name}: {text}");
        assert!(!text.trim().is_empty(), "{name}: error without a message");
    }
    assert_eq!(
        f.snapshot().await,
        before,
        "a refused declaration changed something"
    );
    let mut conn = PgConnection::connect(&f.database).await.unwrap();
    let declared: Option<String> =
        sqlx::query("SELECT file_hash FROM pending_objects WHERE key = $1")
            .bind(NAR)
            .fetch_one(&mut conn)
            .await
            .unwrap()
            .get(0);
    assert_eq!(declared, None, "the refused batch recorded its valid half");

    // Declared: a PUT bound to the hash, which Garage enforces.
    let answer: Value = f
        .post(&files, f.push_token())
        .json(&declare(NAR, &hash, body.len()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let nar = &answer["pending_objects"][NAR];
    let mut wrong = body.clone();
    wrong.push(b'!');
    assert_eq!(
        put(&f.http, nar, wrong).await,
        400,
        "Garage took other bytes: {nar}"
    );
    assert_eq!(put(&f.http, nar, body.clone()).await, 200);
    for key in [format!("{HASH}.narinfo"), format!("{HASH}.ls")] {
        let object = &started["pending_objects"][key.as_str()];
        assert_eq!(put(&f.http, object, b"x".to_vec()).await, 200, "{key}");
    }
    let (status, text) = f.complete(&id).await;
    assert_eq!(status, 204, "{text}");
    let row = sqlx::query("SELECT file_hash, file_size FROM objects WHERE key = $1")
        .bind(NAR)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<Option<String>, _>(0), Some(hash));
    assert_eq!(row.get::<Option<i64>, _>(1), Some(body.len() as i64));
    // The session is gone: declaring now names no session.
    let late = f
        .post(&files, f.push_token())
        .json(&declare(
            NAR,
            "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s",
            1,
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status().as_u16(), 404);
}

/// Nix's base-32 of a digest, written out here so the test does not trust the code it tests.
fn larder_worker_free_base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdfghijklmnpqrsvwxyz";
    let len = (bytes.len() * 8 - 1) / 5 + 1;
    (0..len)
        .rev()
        .map(|n| {
            let b = n * 5;
            let (i, j) = (b / 8, b % 8);
            let lo = bytes[i] >> j;
            let hi = if i + 1 < bytes.len() {
                ((bytes[i + 1] as u16) << (8 - j)) as u8
            } else {
                0
            };
            ALPHABET[((lo | hi) & 0x1f) as usize] as char
        })
        .collect()
}

/// Uploads and commits the fixture closure with `nar_bytes` as its NAR; returns nothing.
async fn commit_fixture(f: &Fixture, nar_bytes: &[u8]) {
    let (started, id) = f.start(&closure_request(None)).await;
    let contents: BTreeMap<String, Vec<u8>> = BTreeMap::from([
        (NAR.to_string(), nar_bytes.to_vec()),
        (format!("{HASH}.ls"), b"{}".to_vec()),
        (
            format!("{HASH}.narinfo"),
            format!("StorePath: /nix/store/{HASH}-x\nURL: {NAR}\n").into_bytes(),
        ),
    ]);
    for (key, pending) in started["pending_objects"].as_object().unwrap() {
        let status = put(&f.http, pending, contents[key].clone()).await;
        assert!((200..300).contains(&status), "PUT {key}: {status}");
    }
    let (status, text) = f.complete(&id).await;
    assert_eq!(status, 204, "{text}");
}

#[tokio::test]
async fn read_proxy_serves_ranges_and_304() {
    let f = fixture("ranges", &[]);
    let nar: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    commit_fixture(&f, &nar).await;

    let whole = f.http.get(f.url(&format!("/{NAR}"))).send().await.unwrap();
    assert_eq!(whole.status().as_u16(), 200);
    assert!(whole.headers()["cache-control"]
        .to_str()
        .unwrap()
        .contains("immutable"));
    let etag = whole.headers()["etag"].to_str().unwrap().to_string();
    assert_eq!(whole.bytes().await.unwrap().as_ref(), &nar[..]);

    let part = f
        .http
        .get(f.url(&format!("/{NAR}")))
        .header("Range", "bytes=1000-1999")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status().as_u16(), 206);
    assert_eq!(
        part.headers()["content-range"].to_str().unwrap(),
        "bytes 1000-1999/100000"
    );
    assert_eq!(part.bytes().await.unwrap().as_ref(), &nar[1000..2000]);

    let beyond = f
        .http
        .get(f.url(&format!("/{NAR}")))
        .header("Range", "bytes=200000-")
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status().as_u16(), 416);

    let cached = f
        .http
        .get(f.url(&format!("/{NAR}")))
        .header("If-None-Match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status().as_u16(), 304);

    let missing = f
        .http
        .get(f.url(&format!("/{}.narinfo", "1".repeat(32))))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    let escape = f
        .http
        .get(f.url("/nar/..%2f..%2fetc%2fpasswd"))
        .send()
        .await
        .unwrap();
    assert_eq!(escape.status().as_u16(), 404);

    let info = f
        .http
        .get(f.url("/nix-cache-info"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(info.contains("StoreDir: /nix/store"), "{info}");
}

#[tokio::test]
async fn narinfos_are_answered_from_memory_for_the_cache_ttl_only() {
    let f = fixture("narinfo-cache", &["--narinfo-cache-ttl", "2s"]);
    let narinfo = f.url(&format!("/{HASH}.narinfo"));
    let get = |etag: Option<&str>| {
        let mut request = f.http.get(&narinfo);
        if let Some(etag) = etag {
            request = request.header("If-None-Match", etag);
        }
        request.send()
    };
    // A miss is not remembered: the path is found as soon as it is pushed.
    assert_eq!(get(None).await.unwrap().status().as_u16(), 404);
    commit_fixture(&f, b"cached nar").await;
    let first = get(None).await.unwrap();
    assert_eq!(first.status().as_u16(), 200);
    let etag = first.headers()["etag"].to_str().unwrap().to_string();
    let text = first.text().await.unwrap();
    assert!(
        text.starts_with(&format!("StorePath: /nix/store/{HASH}-x")),
        "{text}"
    );

    // Deleted behind the worker's back, as a collection run elsewhere would: still served
    // from memory, validators included, until the TTL runs out.
    f.bucket.delete(&format!("{HASH}.narinfo")).await;
    let second = get(None).await.unwrap();
    assert_eq!(second.status().as_u16(), 200);
    assert_eq!(second.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(second.text().await.unwrap(), text);
    assert_eq!(get(Some(&etag)).await.unwrap().status().as_u16(), 304);
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    assert_eq!(get(None).await.unwrap().status().as_u16(), 404);

    // Without the cache the deletion shows at once.
    let g = fixture("narinfo-nocache", &["--narinfo-cache-size", "0"]);
    commit_fixture(&g, b"uncached nar").await;
    let url = g.url(&format!("/{HASH}.narinfo"));
    assert_eq!(
        g.http.get(&url).send().await.unwrap().status().as_u16(),
        200
    );
    g.bucket.delete(&format!("{HASH}.narinfo")).await;
    assert_eq!(
        g.http.get(&url).send().await.unwrap().status().as_u16(),
        404
    );
}

#[tokio::test]
async fn nar_reads_redirect_to_presigned_storage_urls_when_asked() {
    let f = fixture("redirect", &["--redirect-nars"]);
    let nar = b"redirected nar bytes".to_vec();
    commit_fixture(&f, &nar).await;
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = no_follow
        .get(f.url(&format!("/{NAR}")))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 307);
    let location = answer.headers()["location"].to_str().unwrap().to_string();
    assert!(location.starts_with(&f.bucket.endpoint), "{location}");
    let fetched = f.http.get(&location).send().await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), &nar[..]);
    // A presigned GET URL is signed for GET only: a HEAD is answered by the worker, from
    // the object's metadata, not sent where the signature fails.
    let head = f.http.head(f.url(&format!("/{NAR}"))).send().await.unwrap();
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(
        head.headers()["content-length"],
        nar.len().to_string().as_str()
    );
}
