#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! The read proxy's edge cases, asked of both backends (PostgreSQL + Garage, and the
//! embedded SQLite + folder default), which must answer alike: ranges at and past the
//! ends, ranges it cannot serve, HEAD, conditional requests and If-Range as RFC 9110 reads
//! them, and percent-encoded paths that try to leave the cache.

use std::collections::BTreeMap;

use larder_e2e::larder::{Backend, Worker};
use reqwest::Method;
use serde_json::json;

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const NAR: &str = "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst";
const NAR_LEN: usize = 1000;

fn nar_bytes() -> Vec<u8> {
    (0..NAR_LEN as u32).map(|i| (i % 251) as u8).collect()
}

fn narinfo_text() -> String {
    format!("StorePath: /nix/store/{HASH}-x\nURL: {NAR}\nCompression: zstd\n")
}

/// A worker on each backend, each holding one committed closure whose narinfo is stored
/// zstd-compressed with `Content-Encoding: zstd`, as niks3 and `larder push` store it.
async fn workers(test: &str) -> Vec<(&'static str, Worker)> {
    let workers = Worker::on_both_backends(test);
    for (_, worker) in &workers {
        commit(worker).await;
    }
    workers
}

async fn commit(w: &Worker) {
    let http = reqwest::Client::new();
    let request = json!({"closure": format!("{HASH}.narinfo"), "objects": [
        {"key": format!("{HASH}.narinfo"), "type": "narinfo", "refs": [NAR, format!("{HASH}.ls")]},
        {"key": NAR, "type": "nar", "refs": [], "nar_size": NAR_LEN},
        {"key": format!("{HASH}.ls"), "type": "listing", "refs": []}]});
    let started = w.start_session(&request).await;
    let narinfo = zstd::encode_all(narinfo_text().as_bytes(), 3).unwrap();
    let contents: BTreeMap<String, (Vec<u8>, Option<&str>)> = BTreeMap::from([
        (NAR.to_string(), (nar_bytes(), None)),
        (format!("{HASH}.ls"), (b"{}".to_vec(), None)),
        (format!("{HASH}.narinfo"), (narinfo, Some("zstd"))),
    ]);
    for (key, pending) in started["pending_objects"].as_object().unwrap() {
        let (body, encoding) = contents[key].clone();
        let mut put = http.put(pending["presigned_url"].as_str().unwrap());
        if let Some(encoding) = encoding {
            put = put.header("Content-Encoding", encoding);
        }
        let status = put.body(body).send().await.unwrap().status();
        assert!(status.is_success(), "PUT {key}: {status}");
    }
    let id = started["id"].as_str().unwrap();
    let done = http
        .post(format!("{}/api/pending_closures/{id}/complete", w.url))
        .bearer_auth(&w.token)
        .send()
        .await
        .unwrap();
    assert_eq!(done.status().as_u16(), 204);
}

/// One answer: status, the headers asked about (absent ones empty), and the body.
struct Answer {
    status: u16,
    headers: BTreeMap<&'static str, String>,
    body: Vec<u8>,
}

async fn ask(method: Method, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut request = reqwest::Client::new().request(method, url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = [
        "content-length",
        "content-range",
        "etag",
        "last-modified",
        "content-encoding",
        "content-type",
        "cache-control",
        "accept-ranges",
    ]
    .into_iter()
    .map(|name| {
        let value = response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        (name, value)
    })
    .collect();
    let body = response.bytes().await.unwrap().to_vec();
    Answer {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn ranges_at_the_edges_and_ranges_it_cannot_serve() {
    let nar = nar_bytes();
    for (backend, w) in workers("range-edges").await {
        let url = format!("{}/{NAR}", w.url);
        let ranged = |range: &'static str| {
            let url = url.clone();
            async move { ask(Method::GET, &url, &[("Range", range)]).await }
        };

        let first = ranged("bytes=0-0").await;
        assert_eq!(first.status, 206, "{backend}: bytes=0-0");
        assert_eq!(
            first.headers["content-range"], "bytes 0-0/1000",
            "{backend}"
        );
        assert_eq!(first.body, &nar[..1], "{backend}");

        let suffix = ranged("bytes=-5000").await;
        assert_eq!(
            suffix.status, 206,
            "{backend}: a suffix longer than the object"
        );
        assert_eq!(
            suffix.headers["content-range"], "bytes 0-999/1000",
            "{backend}"
        );
        assert_eq!(suffix.body, nar, "{backend}");

        for past in ["bytes=1000-", "bytes=1000-2000", "bytes=-0"] {
            let answer = ranged(past).await;
            assert_eq!(answer.status, 416, "{backend}: {past}");
            assert_eq!(
                answer.headers["content-range"], "bytes */1000",
                "{backend}: {past}"
            );
        }

        // Several ranges, another unit, a backwards range: ignored, the whole object sent.
        for unusable in ["bytes=0-1,5-6", "items=0-1", "bytes=5-2", "bytes=x-"] {
            let answer = ranged(unusable).await;
            assert_eq!(answer.status, 200, "{backend}: {unusable}");
            assert_eq!(answer.headers["content-range"], "", "{backend}: {unusable}");
            assert_eq!(answer.body, nar, "{backend}: {unusable}");
        }

        // A narinfo is served decompressed, so a range of it is ignored, never applied
        // to the stored bytes.
        let narinfo = format!("{}/{HASH}.narinfo", w.url);
        let answer = ask(Method::GET, &narinfo, &[("Range", "bytes=0-4")]).await;
        assert_eq!(answer.status, 200, "{backend}: ranged narinfo");
        assert_eq!(answer.body, narinfo_text().as_bytes(), "{backend}");
        assert_eq!(answer.headers["content-encoding"], "", "{backend}");
    }
}

#[tokio::test]
async fn head_answers_with_the_headers_of_get_and_no_body() {
    for (backend, w) in workers("head").await {
        for path in [
            NAR.to_string(),
            format!("{HASH}.narinfo"),
            format!("{HASH}.ls"),
        ] {
            let url = format!("{}/{path}", w.url);
            let get = ask(Method::GET, &url, &[]).await;
            let head = ask(Method::HEAD, &url, &[]).await;
            assert_eq!(get.status, 200, "{backend}: GET {path}");
            assert_eq!(head.status, 200, "{backend}: HEAD {path}");
            assert_eq!(head.headers, get.headers, "{backend}: {path}");
            assert_eq!(
                head.headers["content-length"],
                get.body.len().to_string(),
                "{backend}: {path}"
            );
            assert!(head.body.is_empty(), "{backend}: HEAD {path} sent a body");
        }
        let ranged = ask(
            Method::HEAD,
            &format!("{}/{NAR}", w.url),
            &[("Range", "bytes=10-19")],
        )
        .await;
        assert_eq!(ranged.status, 206, "{backend}");
        assert_eq!(ranged.headers["content-length"], "10", "{backend}");
        assert!(ranged.body.is_empty(), "{backend}");
        for range in ["bytes=10-19", "bytes=-5000", "bytes=1000-", "bytes=0-1,5-6"] {
            let url = format!("{}/{NAR}", w.url);
            let get = ask(Method::GET, &url, &[("Range", range)]).await;
            let head = ask(Method::HEAD, &url, &[("Range", range)]).await;
            assert_eq!(head.status, get.status, "{backend}: {range}");
            assert_eq!(head.headers, get.headers, "{backend}: {range}");
        }
    }
}

/// A HEAD asks storage for headers, never for the bytes: a HEAD of a 1 GiB NAR must not
/// read it from the bucket. Garage's log of the requests it got tells.
#[tokio::test]
async fn head_reads_no_bytes_from_the_bucket() {
    for (backend, w) in workers("head-no-get").await {
        let Backend::Postgres { bucket, .. } = &w.backend else {
            continue;
        };
        let listing = format!("{HASH}.ls");
        let absent = NAR.replace("1b8", "0b8");
        let keys = [NAR, listing.as_str(), absent.as_str()];
        let before = keys.map(|key| bucket.requests("GET", key));
        let heads: [Case; 6] = [
            (NAR, vec![], 200),
            (NAR, vec![("Range", "bytes=10-19")], 206),
            (NAR, vec![("Range", "bytes=1000-")], 416),
            (NAR, vec![("If-None-Match", "*")], 304),
            (&listing, vec![], 200),
            (&absent, vec![], 404),
        ];
        for (key, headers, status) in heads {
            let answer = ask(Method::HEAD, &format!("{}/{key}", w.url), &headers).await;
            assert_eq!(answer.status, status, "{backend}: HEAD {key} {headers:?}");
        }
        for (key, before) in keys.into_iter().zip(before) {
            assert_eq!(
                bucket.requests("GET", key),
                before,
                "{backend}: a HEAD of {key} sent a GET to the bucket"
            );
            // Not vacuous: Garage logged the worker's requests.
            assert!(bucket.requests("HEAD", key) > 0, "{backend}: {key}");
        }
    }
}

/// A HEAD of an index file asks the bucket for its metadata too: shards can be megabytes.
/// It answers what a GET would, 304 and 404 included.
#[tokio::test]
async fn index_head_reads_no_bytes_from_the_bucket() {
    for (backend, w) in workers("index-head").await {
        let Backend::Postgres { bucket, .. } = &w.backend else {
            continue;
        };
        let key = "nix-cache-index/bloom.bin";
        bucket
            .client()
            .put_object()
            .bucket(&bucket.name)
            .key(key)
            .body(vec![7u8; 3000].into())
            .send()
            .await
            .unwrap();
        let url = format!("{}/{key}", w.url);
        let missing = format!("{}/nix-cache-index/shards/1/root.idx.zst", w.url);
        let get = ask(Method::GET, &url, &[]).await;
        let gets = bucket.requests("GET", key);
        let head = ask(Method::HEAD, &url, &[]).await;
        assert_eq!(
            (head.status, &head.headers),
            (get.status, &get.headers),
            "{backend}"
        );
        assert_eq!(head.headers["content-length"], "3000", "{backend}");
        assert!(head.body.is_empty(), "{backend}");
        let etag = get.headers["etag"].as_str();
        let cached = ask(Method::HEAD, &url, &[("If-None-Match", etag)]).await;
        assert_eq!(cached.status, 304, "{backend}");
        assert_eq!(
            cached.headers["cache-control"],
            get.headers["cache-control"]
        );
        assert_eq!(
            ask(Method::HEAD, &missing, &[]).await.status,
            404,
            "{backend}"
        );
        assert_eq!(
            bucket.requests("GET", key),
            gets,
            "{backend}: a HEAD of {key} sent a GET to the bucket"
        );
        assert!(
            bucket.requests("HEAD", key) >= 2,
            "{backend}: HEADs not logged"
        );
    }
}

/// A Range with If-Range (RFC 9110 §13.1.5) is served only while the object is the one
/// the client holds part of (its strong tag, or its Last-Modified exactly); otherwise the
/// whole object is sent, so a resumed download never splices two versions.
#[tokio::test]
async fn if_range_serves_the_range_only_of_the_version_the_client_holds() {
    let nar = nar_bytes();
    for (backend, w) in workers("if-range").await {
        let url = format!("{}/{NAR}", w.url);
        let whole = ask(Method::GET, &url, &[]).await;
        let etag = whole.headers["etag"].clone();
        let modified = whole.headers["last-modified"].clone();
        let weak = format!("W/{etag}");
        let cases: [(&str, &str, &str, u16); 9] = [
            ("its tag", "bytes=10-19", &etag, 206),
            ("its date", "bytes=10-19", &modified, 206),
            ("another tag", "bytes=10-19", "\"other\"", 200),
            // The comparison is strong: a weak tag never matches.
            ("its tag made weak", "bytes=10-19", &weak, 200),
            (
                "another date",
                "bytes=10-19",
                "Thu, 01 Jan 1970 00:00:00 GMT",
                200,
            ),
            ("neither tag nor date", "bytes=10-19", "yesterday", 200),
            ("its tag, past the end", "bytes=1000-", &etag, 416),
            // A range past the end of another version is no reason for a 416.
            ("another tag, past the end", "bytes=1000-", "\"other\"", 200),
            // A Range we ignore stays ignored.
            ("its tag, several ranges", "bytes=0-1,5-6", &etag, 200),
        ];
        for (name, range, if_range, status) in cases {
            for method in [Method::GET, Method::HEAD] {
                let headers = [("Range", range), ("If-Range", if_range)];
                let answer = ask(method.clone(), &url, &headers).await;
                let what = format!("{backend}: {method} {name}");
                assert_eq!(answer.status, status, "{what}");
                let (content_range, length, body) = match status {
                    206 => ("bytes 10-19/1000", "10", &nar[10..20]),
                    200 => ("", "1000", &nar[..]),
                    _ => ("bytes */1000", "", &[][..]),
                };
                assert_eq!(answer.headers["content-range"], content_range, "{what}");
                if status != 416 {
                    assert_eq!(answer.headers["content-length"], length, "{what}");
                    assert_eq!(answer.headers["etag"], etag, "{what}");
                }
                if method == Method::GET && status != 416 {
                    assert_eq!(answer.body, body, "{what}");
                }
            }
        }
        // If-None-Match comes first (§13.2.2): the client's copy is current, whatever
        // If-Range says.
        for method in [Method::GET, Method::HEAD] {
            let headers = [
                ("If-None-Match", etag.as_str()),
                ("Range", "bytes=10-19"),
                ("If-Range", "\"other\""),
            ];
            let answer = ask(method.clone(), &url, &headers).await;
            assert_eq!(answer.status, 304, "{backend}: {method}");
        }

        // The object changes behind the worker's back (same length, other bytes): a
        // download resumed with the old tag gets the new version whole. (Not with the old
        // date: the change may fall in the same second, which is why RFC 9110 §8.8.2.2 has
        // clients send a date only when it is a second older than the answer's Date.)
        let changed: Vec<u8> = nar.iter().map(|b| b ^ 0xff).collect();
        replace(&w, NAR, &changed).await;
        let headers = [("Range", "bytes=500-"), ("If-Range", etag.as_str())];
        let resumed = ask(Method::GET, &url, &headers).await;
        assert_eq!(resumed.status, 200, "{backend}: resumed after a change");
        assert_eq!(resumed.body, changed, "{backend}: resumed after a change");
        let current = resumed.headers["etag"].clone();
        assert_ne!(current, etag, "{backend}");
        let headers = [("Range", "bytes=500-"), ("If-Range", current.as_str())];
        let resumed = ask(Method::GET, &url, &headers).await;
        assert_eq!(resumed.status, 206, "{backend}: resumed with {current}");
        assert_eq!(resumed.body, &changed[500..], "{backend}");
    }
}

/// Stores `bytes` as `key` straight into the worker's storage, as another writer would.
async fn replace(w: &Worker, key: &str, bytes: &[u8]) {
    match &w.backend {
        Backend::Embedded => {
            // Replaced whole, as the store itself writes: a new file renamed over the old.
            let path = w.data_dir.join("objects").join(key);
            let temp = path.with_extension("replacing");
            std::fs::write(&temp, bytes).unwrap();
            std::fs::rename(&temp, &path).unwrap();
        }
        Backend::Postgres { bucket, .. } => {
            bucket
                .client()
                .put_object()
                .bucket(&bucket.name)
                .key(key)
                .body(bytes.to_vec().into())
                .send()
                .await
                .unwrap();
        }
    }
}

/// A conditional request: its name, its headers, the status it must get.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16);

#[tokio::test]
async fn conditional_reads_follow_rfc_9110() {
    for (backend, w) in workers("conditions").await {
        for path in [
            NAR.to_string(),
            format!("{HASH}.narinfo"),
            format!("{HASH}.ls"),
        ] {
            let url = format!("{}/{path}", w.url);
            let whole = ask(Method::GET, &url, &[]).await;
            let etag = whole.headers["etag"].clone();
            let modified = whole.headers["last-modified"].clone();
            assert!(
                !etag.is_empty() && !modified.is_empty(),
                "{backend}: {path}"
            );
            let weak = format!("W/{etag}");
            let listed = format!("\"other\", {etag}");
            let cases: [Case; 7] = [
                ("its tag", vec![("If-None-Match", &etag)], 304),
                (
                    "a list holding its tag",
                    vec![("If-None-Match", &listed)],
                    304,
                ),
                // If-None-Match compares weakly (RFC 9110 §13.1.2): a proxy in front
                // that compresses answers turns tags weak, and revalidates with them.
                ("its tag made weak", vec![("If-None-Match", &weak)], 304),
                ("*", vec![("If-None-Match", "*")], 304),
                (
                    "not modified since",
                    vec![("If-Modified-Since", &modified)],
                    304,
                ),
                // With If-None-Match present, If-Modified-Since is ignored (§13.2.2):
                // another tag means the client's copy is stale, whatever its date.
                (
                    "another tag, not modified since",
                    vec![
                        ("If-None-Match", "\"other\""),
                        ("If-Modified-Since", &modified),
                    ],
                    200,
                ),
                (
                    "its tag and a range",
                    vec![("If-None-Match", &etag), ("Range", "bytes=0-1")],
                    304,
                ),
            ];
            for (name, headers, expected) in cases {
                let answer = ask(Method::GET, &url, &headers).await;
                assert_eq!(answer.status, expected, "{backend}: {path}: {name}");
                if expected == 200 {
                    assert_eq!(answer.body, whole.body, "{backend}: {path}: {name}");
                }
                let head = ask(Method::HEAD, &url, &headers).await;
                assert_eq!(head.status, expected, "{backend}: HEAD {path}: {name}");
            }
        }

        let info = format!("{}/nix-cache-info", w.url);
        let etag = ask(Method::GET, &info, &[]).await.headers["etag"].clone();
        for tag in [etag.clone(), format!("W/{etag}"), "*".to_string()] {
            let answer = ask(Method::GET, &info, &[("If-None-Match", &tag)]).await;
            assert_eq!(
                answer.status, 304,
                "{backend}: nix-cache-info, If-None-Match: {tag}"
            );
        }
    }
}

/// Status of a GET of `path` sent byte for byte as written (HTTP clients normalise
/// `%2e%2e` and `..` away before sending; an attacker's does not).
async fn raw_status(base: &str, path: &str) -> u16 {
    let addr = larder_e2e::raw_http::authority(base);
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    larder_e2e::raw_http::status(base, &head).await
}

#[tokio::test]
async fn encoded_paths_never_leave_the_cache() {
    for (backend, w) in workers("encoded-paths").await {
        // The data dir holds the push token and signing key; nothing may reach them.
        for path in [
            "/%2e%2e/%2e%2e/etc/passwd",
            "/nar/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
            "/log/..%2f..%2fpush-token",
            "/log%2f..%2f..%2fsigning-key",
            "/%2e%2e%2fsigning-key",
            "/nar/%252e%252e%252fsigning-key",
            "/log/..%5c..%5csigning-key.drv",
            "/log/a%00.drv",
            "/log/%c0%ae%c0%ae%2fx.drv",
            "/nix-cache-index/%2e%2e/nix-cache-info",
            "/nix-cache-index/..%2f..%2fsigning-key",
            "/nix-cache-index/journal/%2e%2e%2f%2e%2e%2fsigning-key",
            "/.upload-secret",
            "/.multipart",
            // Build log keys that niks3's pattern allows but no backend can store.
            "/log/..zlogout.drv",
            "/log/.upload-secret.drv",
        ] {
            assert_eq!(raw_status(&w.url, path).await, 404, "{backend}: {path}");
        }
        // The encoded slash of a real key is just a slash.
        assert_eq!(
            raw_status(&w.url, &NAR.replace('/', "%2F").replacen("nar", "/nar", 1)).await,
            200,
            "{backend}"
        );
    }
}
