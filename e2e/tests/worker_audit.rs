#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

//! What a worker's log tells an operator about who changed the cache: each push started
//! and committed, pins, garbage collections and refused tokens, by token name (never the
//! token), as one JSON object per line with `--log-format json`.

use larder_e2e::garage;
use larder_e2e::larder::{Backend, Worker};
use larder_e2e::postgres;
use serde_json::{json, Value};

const HASH: &str = "0123456789abcdfghijklmnpqrsvwxyz";
const NAR: &str = "nar/1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s.nar";

/// Every line of the worker's log, parsed; panics on a line that is not JSON.
fn log_lines(worker: &Worker) -> Vec<Value> {
    worker
        .log()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

/// The fields of the lines whose message is `message`.
fn events(worker: &Worker, message: &str) -> Vec<Value> {
    log_lines(worker)
        .into_iter()
        .filter(|l| l["fields"]["message"] == message)
        .map(|l| l["fields"].clone())
        .collect()
}

#[tokio::test]
async fn changes_and_refusals_are_logged_by_token_name_never_by_token() {
    let backend = Backend::Postgres {
        database: postgres::database("audit"),
        bucket: garage::bucket("audit"),
    };
    let worker = Worker::start("audit", backend, &["--log-format", "json"]);
    let http = reqwest::Client::new();
    let narinfo = format!("{HASH}.narinfo");
    let request = json!({"closure": narinfo, "objects": [
        {"key": narinfo, "type": "narinfo", "refs": [NAR]},
        {"key": NAR, "type": "nar", "refs": [], "nar_size": 3000}]});

    // No banner for a person in JSON mode: one event with what a client needs.
    let serving = events(&worker, "serving");
    assert_eq!(serving.len(), 1, "{}", worker.log());
    assert_eq!(serving[0]["url"], worker.url.as_str());
    assert_eq!(serving[0]["public_keys"], worker.public_key.as_str());

    let session = worker.start_session(&request).await;
    let id = session["id"].as_str().unwrap();
    let started = events(&worker, "push started");
    assert_eq!(started.len(), 1, "{}", worker.log());
    assert_eq!(started[0]["token"], "test");
    assert_eq!(started[0]["session"].to_string(), id);
    assert_eq!(started[0]["closure"], narinfo.as_str());
    assert_eq!(
        (
            started[0]["objects"].as_u64(),
            started[0]["to_upload"].as_u64()
        ),
        (Some(2), Some(2))
    );

    let text = format!("StorePath: /nix/store/{HASH}-x\nURL: {NAR}\n");
    for (key, body) in [
        (NAR, vec![7u8; 3000]),
        (narinfo.as_str(), text.into_bytes()),
    ] {
        let url = session["pending_objects"][key]["presigned_url"]
            .as_str()
            .unwrap();
        let status = http.put(url).body(body).send().await.unwrap().status();
        assert!(status.is_success(), "PUT {key}: {status}");
    }
    let post = |path: String, token: &str| {
        http.post(format!("{}{path}", worker.url))
            .bearer_auth(token.to_string())
    };
    let complete = post(
        format!("/api/pending_closures/{id}/complete"),
        &worker.token,
    );
    assert_eq!(complete.send().await.unwrap().status(), 204);
    let committed = events(&worker, "push committed");
    assert_eq!(committed.len(), 1, "{}", worker.log());
    assert_eq!(committed[0]["token"], "test");
    assert_eq!(committed[0]["uploaded"].as_u64(), Some(2));

    let pin = post("/api/pins/release".into(), &worker.token)
        .json(&json!({"store_path": format!("/nix/store/{HASH}-x")}));
    assert_eq!(pin.send().await.unwrap().status(), 204);
    let pinned = events(&worker, "pinned");
    assert_eq!((pinned.len(), &pinned[0]["pin"]), (1, &json!("release")));

    // Refusals name the token that lacked the scope; an unknown one is not named at all.
    let refused = post("/api/pending_closures".into(), &worker.read_token).json(&request);
    assert_eq!(refused.send().await.unwrap().status(), 403);
    let lacking = events(&worker, "refused: token lacks the scope");
    assert_eq!(lacking.len(), 1, "{}", worker.log());
    assert_eq!(
        (&lacking[0]["token"], &lacking[0]["scope"]),
        (&json!("reader"), &json!("push"))
    );
    let stranger = "not-a-token-of-this-worker";
    let refused = post("/api/pending_closures".into(), stranger).json(&request);
    assert_eq!(refused.send().await.unwrap().status(), 401);
    assert_eq!(
        events(&worker, "refused: unknown token").len(),
        1,
        "{}",
        worker.log()
    );

    let log = worker.log();
    for secret in [worker.token.as_str(), worker.read_token.as_str(), stranger] {
        assert!(!log.contains(secret), "a token reached the log: {log}");
    }
}
