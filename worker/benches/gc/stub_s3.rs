//! A stand-in S3 endpoint for both collectors: it answers every multi-object delete at
//! once (echoing each key as deleted) and counts what it was asked, so the benchmark
//! times the databases' side of the sweep and reports the bucket side separately.
//! Both Larder (aws-sdk-s3) and niks3 (minio-go) talk to it over HTTP as they would to
//! a real bucket; the only other calls they make are niks3's start-up probe and upload
//! of `nix-cache-info`/`index.html`, answered with an empty success.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;

/// What the stub was asked to delete.
#[derive(Debug, Default)]
pub struct Counters {
    pub delete_requests: AtomicU64,
    pub deleted_keys: AtomicU64,
}

impl Counters {
    /// (requests, keys) so far.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.delete_requests.load(Ordering::Relaxed),
            self.deleted_keys.load(Ordering::Relaxed),
        )
    }
}

/// A running stub: its URL and counters.
pub struct StubS3 {
    pub url: String,
    pub counters: Arc<Counters>,
}

/// Starts the stub on 127.0.0.1 on the current runtime.
pub async fn start() -> StubS3 {
    let counters = Arc::new(Counters::default());
    let state = counters.clone();
    let app =
        Router::new().fallback(move |method, uri, body| handle(state.clone(), method, uri, body));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StubS3 { url, counters }
}

async fn handle(counters: Arc<Counters>, method: Method, uri: Uri, body: Bytes) -> Response {
    let is_delete = method == Method::POST
        && uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "delete" || p == "delete="));
    if is_delete {
        let text = String::from_utf8_lossy(&body);
        let mut out = String::with_capacity(text.len() + 256);
        out.push_str("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        out.push_str("<DeleteResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
        let mut keys = 0;
        for piece in text.split("<Key>").skip(1) {
            if let Some((key, _)) = piece.split_once("</Key>") {
                keys += 1;
                out.push_str("<Deleted><Key>");
                out.push_str(key);
                out.push_str("</Key></Deleted>");
            }
        }
        out.push_str("</DeleteResult>");
        counters.delete_requests.fetch_add(1, Ordering::Relaxed);
        counters.deleted_keys.fetch_add(keys, Ordering::Relaxed);
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml")],
            out,
        )
            .into_response();
    }
    // Anything else (HEAD/PUT of a small object, a bucket probe): an empty success
    // with the headers S3 clients insist on.
    let mut headers = HeaderMap::new();
    headers.insert(
        header::ETAG,
        HeaderValue::from_static("\"d41d8cd98f00b204e9800998ecf8427e\""),
    );
    headers.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_static("Mon, 01 Jan 2024 00:00:00 GMT"),
    );
    (StatusCode::OK, headers).into_response()
}
