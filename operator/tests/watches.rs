//! What the controllers ask the API server to stream: owned kinds only with the operator's
//! label, and every watch but the two main ones metadata-only (so no Secret's contents).
//!
//! The operator runs against a stand-in API server that records each request and refuses
//! it; every watcher's first list is enough to see how it asks. A stand-in, not the real
//! kube-apiserver, because what is asserted is the request itself: the real server's audit
//! log records the query but not the `Accept` header that asks for metadata only. The
//! e2e operator suite runs the same watches against the real API server.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a test file: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::Router;
use kube::Client;
use larder_operator::controller::{self, Context, Options};
use larder_operator::metrics::Metrics;
use larder_operator::validate::Defaults;

/// One request as the API server got it.
#[derive(Clone, Debug)]
struct Seen {
    /// The last path segment: the resource's plural.
    plural: String,
    /// Query parameters.
    query: BTreeMap<String, String>,
    /// The Accept header.
    accept: String,
}

type Log = Arc<Mutex<Vec<Seen>>>;

async fn refuse(State(log): State<Log>, request: Request) -> (StatusCode, String) {
    let uri = request.uri();
    let seen = Seen {
        plural: uri
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_string(),
        query: url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect(),
        accept: request
            .headers()
            .get("accept")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
    };
    log.lock().unwrap().push(seen);
    let status = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"refused by the test","reason":"Forbidden","code":403}"#;
    (StatusCode::FORBIDDEN, status.to_string())
}

/// Runs the controllers on namespace `nix` against the recording server until every kind
/// they watch was asked for; returns the requests.
async fn requests_of_the_controllers(plurals: &[&str]) -> Vec<Seen> {
    // As main.rs does: a workspace build enables two rustls providers, so none is implied.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let log = Log::default();
    let app = Router::new().fallback(refuse).with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    let client = Client::try_from(config).unwrap();
    let defaults = Defaults {
        worker_image: "larder:1".into(),
    };
    let ctx = Context::new(client, defaults, Arc::new(Metrics::default()), None);
    let options = Options {
        namespace: Some("nix".into()),
    };
    let operator = tokio::spawn(controller::run(Arc::new(ctx), options));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let seen = loop {
        let seen = log.lock().unwrap().clone();
        let all = plurals.iter().all(|p| seen.iter().any(|s| s.plural == *p));
        if all || tokio::time::Instant::now() > deadline {
            break seen;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    operator.abort();
    server.abort();
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_select_the_operators_objects_and_read_only_metadata() {
    let owned = [
        "serviceaccounts",
        "configmaps",
        "services",
        "deployments",
        "poddisruptionbudgets",
        "horizontalpodautoscalers",
        "ingresses",
        "cronjobs",
        "jobs",
    ];
    let mut plurals = owned.to_vec();
    plurals.extend(["secrets", "binarycaches", "gcpolicies"]);
    let seen = requests_of_the_controllers(&plurals).await;
    for plural in &plurals {
        assert!(
            seen.iter().any(|s| s.plural == *plural),
            "no request for {plural}: {seen:#?}"
        );
    }
    for s in &seen {
        let selector = s.query.get("labelSelector").map(String::as_str);
        let metadata_only = s.accept.contains("as=PartialObjectMetadata");
        match s.plural.as_str() {
            // Jobs are watched twice: as children, and as GC runs (by the policy label).
            "jobs" => assert!(
                matches!(
                    selector,
                    Some("app.kubernetes.io/managed-by=larder-operator" | "larder.dev/gc-policy")
                ),
                "{s:?}"
            ),
            p if owned.contains(&p) => assert_eq!(
                selector,
                Some("app.kubernetes.io/managed-by=larder-operator"),
                "{s:?}"
            ),
            _ => {}
        }
        match s.plural.as_str() {
            // The main watches feed the stores the reconcilers read from.
            "gcpolicies" => assert!(!metadata_only, "{s:?}"),
            "binarycaches" => {}
            _ => assert!(metadata_only, "{s:?}"),
        }
    }
    // The caches' main watch streams whole objects; the policies' watch of caches only
    // their metadata.
    let caches: Vec<bool> = seen
        .iter()
        .filter(|s| s.plural == "binarycaches")
        .map(|s| s.accept.contains("as=PartialObjectMetadata"))
        .collect();
    assert!(
        caches.contains(&true) && caches.contains(&false),
        "{caches:?}"
    );
}
