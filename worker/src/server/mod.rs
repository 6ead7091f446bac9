//! The HTTP server: upload API, read proxy, health and metrics on one listener.

pub mod error;
mod listen;
pub mod metrics;
pub mod state;

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::Router;

use crate::storage::Storage;

use state::AppState;

/// Largest JSON body accepted (a 200,000-object closure fits; bigger answers 413).
pub const MAX_BODY: usize = 64 * 1024 * 1024;

/// Every route of a worker.
pub fn router(state: AppState) -> Router {
    let metrics = metrics::Metrics::new();
    let mut app = Router::new()
        .route("/health", get(|| async { "OK\n" }))
        .route("/metrics", get(metrics::serve))
        .merge(crate::upload::router())
        .merge(crate::admin::router())
        .merge(crate::read::router())
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(refuse_declared_oversize))
        .with_state(state.clone());
    if let Storage::Dir(store) = state.storage() {
        // The local directory's "presigned" URLs point back at the worker.
        app = app.nest("/_storage", crate::storage::upload_router(store.clone()));
    }
    app.layer(axum::middleware::from_fn_with_state(
        metrics,
        metrics::track,
    ))
}

/// Answers 413 at once when `Content-Length` already exceeds [`MAX_BODY`]; the body
/// limit alone would only notice after reading 64 MiB the client should not send.
async fn refuse_declared_oversize(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let declared = request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match declared {
        Some(n) if n > MAX_BODY as u64 => {
            axum::response::IntoResponse::into_response(error::ApiError::TooLarge(format!(
                "request body of {n} bytes exceeds the limit of {MAX_BODY} bytes"
            )))
        }
        _ => next.run(request).await,
    }
}

pub use listen::serve;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic

    #[tokio::test]
    async fn accepted_connections_send_without_waiting_for_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        super::listen::set_no_delay(&accepted);
        assert!(accepted.nodelay().unwrap(), "TCP_NODELAY is off");
    }
}
