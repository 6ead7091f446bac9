//! The push client through a faulty network: a proxy in front of a real `larder serve`
//! (embedded default) throttles or loses answers of the upload API, as an overloaded
//! worker or a load balancer timing out does, and the push must still end right.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use larder_e2e::larder::{Backend, Worker};
use larder_e2e::nix::{Nix, PathSpec};
use larder_worker::push::{push, PushOptions, PushSummary};

/// What the proxy does to the first request whose path ends with `suffix`.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Answers 503 with `Retry-After: 2` without passing the request on.
    Throttle { suffix: &'static str },
    /// Passes the request on, then tells the client 502 instead of the worker's answer.
    /// With `forget`, a retry of that very request is answered 404 without passing it
    /// on, as a worker that keeps no record of committed sessions (before schema 0005)
    /// answers a retried commit.
    LoseAnswer { suffix: &'static str, forget: bool },
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    fault: Fault,
    /// The path of the request the fault hit, once it has.
    fired: Arc<Mutex<Option<String>>>,
    /// Every request's path and arrival time.
    seen: Arc<Mutex<Vec<(String, Instant)>>>,
}

impl Proxy {
    /// Starts the proxy in front of `upstream`; returns its base URL.
    async fn start(upstream: &str, fault: Fault) -> (String, Proxy) {
        let proxy = Proxy {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            fault,
            fired: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(Vec::new())),
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, proxy)
    }

    fn times_seen(&self, suffix: &str) -> Vec<Instant> {
        let seen = self.seen.lock().unwrap();
        seen.iter()
            .filter(|(p, _)| p.ends_with(suffix))
            .map(|(_, t)| *t)
            .collect()
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let path = request.uri().path().to_string();
    proxy
        .seen
        .lock()
        .unwrap()
        .push((path.clone(), Instant::now()));
    let (suffix, throttle, forget) = match proxy.fault {
        Fault::Throttle { suffix } => (suffix, true, false),
        Fault::LoseAnswer { suffix, forget } => (suffix, false, forget),
    };
    let fire = {
        let mut fired = proxy.fired.lock().unwrap();
        if forget && fired.as_deref() == Some(path.as_str()) {
            return (StatusCode::NOT_FOUND, "no pending closure\n").into_response();
        }
        let fire = path.ends_with(suffix) && fired.is_none();
        if fire {
            *fired = Some(path.clone());
        }
        fire
    };
    if fire && throttle {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "2")],
            "slow down\n",
        )
            .into_response();
    }
    let target = format!(
        "{}{}",
        proxy.upstream,
        request.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let mut out = proxy.http.request(request.method().clone(), target);
    for (name, value) in request.headers() {
        if name != header::HOST {
            out = out.header(name, value);
        }
    }
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap();
    let answer = out.body(body).send().await.unwrap();
    if fire {
        return (StatusCode::BAD_GATEWAY, "upstream timed out\n").into_response();
    }
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        response = response.header(name, value);
    }
    response
        .body(Body::from(answer.bytes().await.unwrap()))
        .unwrap()
}

async fn push_through(proxy_url: &str, worker: &Worker, paths: &[String]) -> PushSummary {
    let mut options = PushOptions::new(proxy_url, paths.iter().map(PathBuf::from).collect());
    options.token = Some(worker.token.clone());
    // `nix path-info` must see the tests' Nix configuration.
    std::env::set_var("NIX_CONF_DIR", Nix::shared().conf_dir());
    std::env::set_var("NIX_REMOTE", "local");
    push(options)
        .await
        .unwrap_or_else(|e| panic!("push failed: {e}\nworker log:\n{}", worker.log()))
}

fn closure(test: &str) -> Vec<String> {
    Nix::shared().build_closure(
        test,
        &[
            PathSpec::new("leaf", 2048, &[]),
            PathSpec::new("root", 1000, &[0]),
        ],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_start_is_retried_after_the_time_the_worker_asks() {
    let paths = closure("push-throttled");
    let worker = Worker::start("push-throttled", Backend::Embedded, &[]);
    let suffix = "/api/pending_closures";
    let (url, proxy) = Proxy::start(&worker.url, Fault::Throttle { suffix }).await;
    let summary = push_through(&url, &worker, &paths[1..]).await;
    assert_eq!(summary.paths_uploaded, 2, "{summary:?}");
    let starts = proxy.times_seen(suffix);
    assert_eq!(starts.len(), 2, "one refused start, one retry");
    let waited = starts[1] - starts[0];
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?}, not the 2 s of Retry-After"
    );
}

/// Pushes `test`'s closure through a proxy that loses the first commit's answer;
/// returns the proxy, to count what the client sent.
async fn push_losing_the_commit_answer(test: &str, forget: bool) -> Proxy {
    let paths = closure(test);
    let worker = Worker::start(test, Backend::Embedded, &[]);
    let fault = Fault::LoseAnswer {
        suffix: "/complete",
        forget,
    };
    let (url, proxy) = Proxy::start(&worker.url, fault).await;
    let summary = push_through(&url, &worker, &paths[1..]).await;
    assert_eq!(summary.paths_uploaded, 2, "{summary:?}");
    assert!(
        proxy.times_seen("/complete").len() >= 2,
        "the commit was not retried"
    );
    // It really is committed: a second push finds everything and uploads nothing.
    let again = push_through(&worker.url, &worker, &paths[1..]).await;
    assert_eq!(
        (again.paths_uploaded, again.objects_uploaded),
        (0, 0),
        "{again:?}"
    );
    proxy
}

#[tokio::test(flavor = "multi_thread")]
async fn a_commit_whose_answer_was_lost_is_not_a_failed_push() {
    // The worker commits, the client hears 502 and retries; the worker remembers the
    // session it committed and answers the retry 204.
    let proxy = push_losing_the_commit_answer("push-lost-commit", false).await;
    assert_eq!(
        proxy.times_seen("/api/pending_closures").len(),
        1,
        "the retry was answered, no second session needed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_commit_answer_and_a_forgotten_session_are_not_a_failed_push() {
    // As against a worker without a record of committed sessions: the retry hears 404,
    // and the client proves the commit by a second session that needs nothing.
    let proxy = push_losing_the_commit_answer("push-lost-commit-404", true).await;
    assert_eq!(
        proxy.times_seen("/api/pending_closures").len(),
        2,
        "the client confirmed the commit with a second session"
    );
}
