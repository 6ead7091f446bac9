#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! The upload API's repeated and malformed steps, asked of both backends (PostgreSQL +
//! Garage, and the embedded SQLite + folder default), which must answer alike: multipart
//! completions with wrong, missing, duplicate or unsorted parts; completing, signing and
//! completing again. A refused step leaves the upload as it was: still open, the object
//! still absent.

use larder_e2e::larder::Worker;
use serde_json::{json, Value};

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const NAR: &str = "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar.zst";

struct Client<'a> {
    worker: &'a Worker,
    http: reqwest::Client,
}

impl Client<'_> {
    async fn post(&self, path: &str, body: Option<&Value>) -> (u16, String) {
        let mut request = self
            .http
            .post(format!("{}{path}", self.worker.url))
            .bearer_auth(&self.worker.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    async fn present(&self, key: &str) -> bool {
        let status = self
            .http
            .head(format!("{}/api/objects/{key}", self.worker.url))
            .bearer_auth(&self.worker.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(status == 204 || status == 404, "HEAD {key}: {status}");
        status == 204
    }

    async fn put(&self, url: &str, body: Vec<u8>) -> String {
        let response = self.http.put(url).body(body).send().await.unwrap();
        assert!(response.status().is_success(), "PUT: {}", response.status());
        response.headers()["etag"].to_str().unwrap().to_string()
    }
}

fn sign_request(key: &str, store_path: &str) -> Value {
    sign_request_with(key, store_path, &[])
}

fn sign_request_with(key: &str, store_path: &str, references: &[&str]) -> Value {
    json!({"narinfos": {key: {
        "store_path": store_path,
        "nar_hash": format!("sha256:{}", "0".repeat(52)),
        "nar_size": 1,
        "references": references,
    }}})
}

#[tokio::test]
async fn repeated_and_malformed_steps_change_nothing_on_either_backend() {
    for (backend, worker) in Worker::on_both_backends("upload-edges") {
        let c = Client {
            worker: &worker,
            http: reqwest::Client::new(),
        };
        let narinfo = format!("{HASH}.narinfo");
        let request = json!({"closure": narinfo, "objects": [
            {"key": narinfo, "type": "narinfo", "refs": [NAR]},
            {"key": NAR, "type": "nar", "refs": [], "nar_size": 30_000_000u64}]});
        let (status, text) = c.post("/api/pending_closures", Some(&request)).await;
        assert_eq!(status, 200, "{backend}: {text}");
        let started: Value = serde_json::from_str(&text).unwrap();
        let id = started["id"].as_str().unwrap();
        let multipart = &started["pending_objects"][NAR]["multipart_info"];
        let upload_id = multipart["upload_id"].as_str().unwrap();
        let urls = multipart["part_urls"].as_array().unwrap();
        let complete = format!("/api/pending_closures/{id}/complete");

        let (status, text) = c.post(&complete, None).await;
        assert_eq!(status, 400, "{backend}: complete before any upload: {text}");

        // S3 wants every part but the last to be at least 5 MiB.
        let first = c
            .put(urls[0].as_str().unwrap(), vec![1; 5 * 1024 * 1024])
            .await;
        let second = c.put(urls[1].as_str().unwrap(), vec![2; 100]).await;
        let parts = |list: Value| json!({"object_key": NAR, "upload_id": upload_id, "parts": list});
        let zeros = format!("\"{}\"", "0".repeat(64));
        let other_nar = format!("nar/{}.nar.zst", "0".repeat(52));
        let refused = [
            (
                "a wrong ETag",
                parts(json!([{"part_number": 1, "etag": zeros}])),
                400,
            ),
            (
                "a part never uploaded",
                parts(
                    json!([{"part_number": 1, "etag": first}, {"part_number": 3, "etag": second}]),
                ),
                400,
            ),
            (
                "a part listed twice",
                parts(
                    json!([{"part_number": 1, "etag": first}, {"part_number": 1, "etag": first},
                             {"part_number": 2, "etag": second}]),
                ),
                400,
            ),
            (
                "part number 0",
                parts(json!([{"part_number": 0, "etag": first}])),
                400,
            ),
            ("no parts", parts(json!([])), 400),
            (
                "another key",
                json!({"object_key": other_nar, "upload_id": upload_id,
                       "parts": [{"part_number": 1, "etag": first}]}),
                404,
            ),
            (
                "an unknown upload",
                json!({"object_key": NAR, "upload_id": "0".repeat(32),
                       "parts": [{"part_number": 1, "etag": first}]}),
                404,
            ),
        ];
        for (name, body, expected) in refused {
            let (status, text) = c.post("/api/multipart/complete", Some(&body)).await;
            assert_eq!(status, expected, "{backend}: {name}: {text}");
            assert!(!text.trim().is_empty(), "{backend}: {name}: no message");
            assert!(!c.present(NAR).await, "{backend}: {name} stored the NAR");
        }

        // The upload is still open: parts out of order are put in order and complete it.
        let unsorted = parts(json!([{"part_number": 2, "etag": second},
                                    {"part_number": 1, "etag": first}]));
        let (status, text) = c.post("/api/multipart/complete", Some(&unsorted)).await;
        assert_eq!(status, 204, "{backend}: unsorted parts: {text}");
        assert!(c.present(NAR).await, "{backend}");
        let (status, _) = c.post("/api/multipart/complete", Some(&unsorted)).await;
        assert_eq!(status, 404, "{backend}: a completed upload is gone");

        let sign = format!("/api/pending_closures/{id}/sign");
        let own_path = format!("/nix/store/{HASH}-x");
        let (status, text) = c.post(&sign, Some(&sign_request(NAR, &own_path))).await;
        assert_eq!(status, 403, "{backend}: signing a NAR key: {text}");
        let foreign = format!("/nix/store/{}-x", "1".repeat(32));
        let (status, text) = c.post(&sign, Some(&sign_request(&narinfo, &foreign))).await;
        assert_eq!(status, 403, "{backend}: signing another path: {text}");
        // A reference the session did not declare is one GC would not keep alive.
        let undeclared = sign_request_with(&narinfo, &own_path, &[&foreign]);
        let (status, text) = c.post(&sign, Some(&undeclared)).await;
        assert_eq!(status, 403, "{backend}: an undeclared reference: {text}");
        assert!(text.contains("did not declare"), "{backend}: {text}");
        // A URL to an object the narinfo did not declare is one GC would not keep alive.
        let mut elsewhere = sign_request(&narinfo, &own_path);
        elsewhere["narinfos"][&narinfo]["url"] = json!(other_nar);
        let (status, text) = c.post(&sign, Some(&elsewhere)).await;
        assert_eq!(status, 403, "{backend}: an undeclared URL: {text}");
        assert!(text.contains("URL"), "{backend}: {text}");
        let mut declared_url = sign_request(&narinfo, &own_path);
        declared_url["narinfos"][&narinfo]["url"] = json!(NAR);
        let (status, text) = c.post(&sign, Some(&declared_url)).await;
        assert_eq!(status, 200, "{backend}: the declared NAR as URL: {text}");
        // A reference to itself needs no declaration.
        let itself = sign_request_with(&narinfo, &own_path, &[&own_path]);
        let (status, text) = c.post(&sign, Some(&itself)).await;
        assert_eq!(status, 200, "{backend}: a self-reference: {text}");
        let (status, first_sig) = c
            .post(&sign, Some(&sign_request(&narinfo, &own_path)))
            .await;
        assert_eq!(status, 200, "{backend}: {first_sig}");
        let (status, second_sig) = c
            .post(&sign, Some(&sign_request(&narinfo, &own_path)))
            .await;
        assert_eq!(
            (status, &second_sig),
            (200, &first_sig),
            "{backend}: signing is repeatable"
        );

        let (status, text) = c.post(&complete, None).await;
        assert_eq!(
            status, 400,
            "{backend}: complete without the narinfo: {text}"
        );
        assert!(text.contains(&narinfo), "{backend}: {text}");
        let url = started["pending_objects"][&narinfo]["presigned_url"]
            .as_str()
            .unwrap();
        c.put(url, format!("StorePath: {own_path}\n").into_bytes())
            .await;
        let (status, text) = c.post(&complete, None).await;
        assert_eq!(status, 204, "{backend}: {text}");
        // A client whose first answer was lost retries: the commit stands, and says so.
        let (status, text) = c.post(&complete, None).await;
        assert_eq!(status, 204, "{backend}: complete again: {text}");
        let (status, text) = c
            .post(&sign, Some(&sign_request(&narinfo, &own_path)))
            .await;
        assert_eq!(status, 404, "{backend}: sign after complete: {text}");
    }
}

/// A session that opened a multipart upload and committed without it (the object came
/// by another session's upload) leaves no upload open in storage.
#[tokio::test]
async fn a_commit_aborts_the_uploads_its_session_left_open() {
    for (backend, worker) in Worker::on_both_backends("upload-left-open") {
        let c = Client {
            worker: &worker,
            http: reqwest::Client::new(),
        };
        let start = |hash: &str, nar_size: u64| {
            let narinfo = format!("{hash}.narinfo");
            json!({"closure": narinfo, "objects": [
                {"key": narinfo, "type": "narinfo", "refs": [NAR]},
                {"key": NAR, "type": "nar", "refs": [], "nar_size": nar_size}]})
        };
        let started = |text: &str| serde_json::from_str::<Value>(text).unwrap();
        // B declares the NAR small and stores it with one PUT, but does not commit yet.
        let other = "1123456789abcdfghijklmnpqrsvwxyz";
        let (status, text) = c
            .post("/api/pending_closures", Some(&start(other, 100)))
            .await;
        assert_eq!(status, 200, "{backend}: {text}");
        let b = started(&text);
        c.put(
            b["pending_objects"][NAR]["presigned_url"].as_str().unwrap(),
            vec![7; 100],
        )
        .await;
        // A declares it large, so it gets a multipart upload. (Opened after B's PUT:
        // Garage drops an upload older than the key's newest object by itself; S3 does
        // not.)
        let (status, text) = c
            .post("/api/pending_closures", Some(&start(HASH, 30_000_000)))
            .await;
        assert_eq!(status, 200, "{backend}: {text}");
        let a = started(&text);
        let part_url = a["pending_objects"][NAR]["multipart_info"]["part_urls"][0]
            .as_str()
            .unwrap()
            .to_string();
        for (session, hash) in [(&b, other), (&a, HASH)] {
            let narinfo = format!("{hash}.narinfo");
            let url = session["pending_objects"][&narinfo]["presigned_url"]
                .as_str()
                .unwrap();
            c.put(
                url,
                format!("StorePath: /nix/store/{hash}-x\n").into_bytes(),
            )
            .await;
            let id = session["id"].as_str().unwrap();
            let (status, text) = c
                .post(&format!("/api/pending_closures/{id}/complete"), None)
                .await;
            assert_eq!(status, 204, "{backend}: complete {hash}: {text}");
        }
        // A's upload is gone from storage: its part URL no longer takes a part.
        let status = c
            .http
            .put(&part_url)
            .body(vec![1; 1024])
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status.as_u16(), 404, "{backend}: A's upload is still open");
    }
}
