#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! What a worker's `/metrics` says about reads and upload sessions, on both backends:
//! body bytes the read proxy sent by object type (HEADs send none), narinfo cache hits
//! and misses, and the open upload sessions with the age of the oldest.

use larder_e2e::larder::Worker;
use serde_json::json;

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const NAR: &str = "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar";

/// The value of `name` (with its labels) on the worker's `/metrics`, 0 when absent.
async fn sample(worker: &Worker, name: &str) -> f64 {
    larder_e2e::metrics::sample(&worker.url, name).await
}

#[tokio::test]
async fn metrics_count_reads_and_open_sessions() {
    for (backend, worker) in Worker::on_both_backends("metrics") {
        let http = reqwest::Client::new();
        let open = "larder_pending_closures";
        let oldest = "larder_pending_closure_oldest_age_seconds";
        assert_eq!(sample(&worker, open).await, 0.0, "{backend}");
        assert_eq!(sample(&worker, oldest).await, 0.0, "{backend}");

        let narinfo = format!("{HASH}.narinfo");
        let session = worker
            .start_session(&json!({"closure": narinfo, "objects": [
                {"key": narinfo, "type": "narinfo", "refs": [NAR]},
                {"key": NAR, "type": "nar", "refs": [], "nar_size": 3000}]}))
            .await;
        assert_eq!(sample(&worker, open).await, 1.0, "{backend}");
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert!(sample(&worker, oldest).await >= 1.0, "{backend}");

        let nar = vec![7u8; 3000];
        let text = format!("StorePath: /nix/store/{HASH}-x\nURL: {NAR}\n");
        for (key, body) in [
            (NAR, nar.clone()),
            (narinfo.as_str(), text.clone().into_bytes()),
        ] {
            let url = session["pending_objects"][key]["presigned_url"]
                .as_str()
                .unwrap();
            let status = http.put(url).body(body).send().await.unwrap().status();
            assert!(status.is_success(), "{backend}: PUT {key}: {status}");
        }
        let id = session["id"].as_str().unwrap();
        let status = http
            .post(format!("{}/api/pending_closures/{id}/complete", worker.url))
            .bearer_auth(&worker.token)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204, "{backend}");
        assert_eq!(sample(&worker, open).await, 0.0, "{backend}");
        assert_eq!(sample(&worker, oldest).await, 0.0, "{backend}");

        let nar_bytes = r#"larder_read_body_bytes_total{kind="nar"}"#;
        let narinfo_bytes = r#"larder_read_body_bytes_total{kind="narinfo"}"#;
        let hits = r#"larder_narinfo_cache_lookups_total{result="hit"}"#;
        let misses = r#"larder_narinfo_cache_lookups_total{result="miss"}"#;
        let get = |path: String| {
            let http = http.clone();
            async move { http.get(path).send().await.unwrap().bytes().await.unwrap() }
        };
        assert_eq!(get(format!("{}/{NAR}", worker.url)).await.len(), 3000);
        assert_eq!(sample(&worker, nar_bytes).await, 3000.0, "{backend}");
        // A HEAD sends no body; a range sends only its bytes.
        http.head(format!("{}/{NAR}", worker.url))
            .send()
            .await
            .unwrap();
        let ranged = http
            .get(format!("{}/{NAR}", worker.url))
            .header("range", "bytes=0-99")
            .send()
            .await
            .unwrap();
        assert_eq!(ranged.status(), 206, "{backend}");
        assert_eq!(ranged.bytes().await.unwrap().len(), 100);
        assert_eq!(sample(&worker, nar_bytes).await, 3100.0, "{backend}");

        for _ in 0..2 {
            assert_eq!(
                get(format!("{}/{narinfo}", worker.url)).await,
                text.as_bytes()
            );
        }
        assert_eq!(sample(&worker, misses).await, 1.0, "{backend}");
        assert_eq!(sample(&worker, hits).await, 1.0, "{backend}");
        assert_eq!(
            sample(&worker, narinfo_bytes).await,
            2.0 * text.len() as f64,
            "{backend}"
        );
    }
}
