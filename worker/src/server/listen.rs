//! The accept loop: every connection with `TCP_NODELAY` and a deadline for request
//! headers, drained on SIGINT or SIGTERM.
//!
//! `axum::serve` gives hyper no timer, so a client could hold a connection forever by
//! sending headers a byte at a time, or by keeping an idle keep-alive connection open;
//! on a public read proxy that is a cheap way to exhaust the worker's file descriptors.

use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1::Builder;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};

/// Serves `app` on `listener` until SIGINT or SIGTERM, then stops accepting and waits for
/// the requests in flight. A client gets `header_timeout` to send a request's headers,
/// counted from when the connection is ready for one: slow headers and idle keep-alive
/// connections are both closed after it.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
) -> std::io::Result<()> {
    serve_until(listener, app, header_timeout, shutdown_signal()).await
}

/// [`serve`] until `shutdown` completes.
async fn serve_until(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    // HTTP/1 only: Nix speaks HTTP/2 only over TLS, which an ingress terminates, and
    // guessing the protocol would read a connection's first bytes with no deadline.
    let mut builder = Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        set_no_delay(&tcp);
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(tcp), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::trace!("connection ended: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Without TCP_NODELAY a streamed body's short segments wait for the client's ACK of the
/// previous ones (Nagle), and the read proxy relays NARs in whatever chunks the bucket
/// sends.
pub(super) fn set_no_delay(tcp: &TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!("cannot set TCP_NODELAY on a connection: {e}");
    }
}

/// A failed accept: a connection that died before it was accepted is nothing to report;
/// anything else (out of file descriptors) is, and accepting again at once would spin.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!("accepting a connection failed: {e}; retrying in 1 s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should panic
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    static STARTED: tokio::sync::Notify = tokio::sync::Notify::const_new();

    /// A server with a 200 ms header deadline on loopback; dropping the sender stops it.
    /// `/slow` says it started on `STARTED`, then answers 300 ms later.
    async fn server() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let slow = || async {
            STARTED.notify_one();
            tokio::time::sleep(Duration::from_millis(300)).await;
            "slow\n"
        };
        let app = axum::Router::new()
            .route("/health", axum::routing::get(|| async { "OK\n" }))
            .route("/slow", axum::routing::get(slow));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(super::serve_until(
            listener,
            app,
            Duration::from_millis(200),
            async move {
                let _ = stopped.await;
            },
        ));
        (addr, stop)
    }

    /// Reads until the server closes the connection, or gives up after 10 s (the
    /// deadline is 200 ms: the bound only keeps a failing test from hanging).
    async fn closed_by_server(tcp: &mut TcpStream) -> Result<Vec<u8>, &'static str> {
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut got))
            .await
            .map_err(|_| "the connection is still open")?
            .map_err(|_| "the connection failed")?;
        Ok(got)
    }

    #[tokio::test]
    async fn a_client_slow_to_send_its_headers_is_cut_off() {
        let (addr, _stop) = server().await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        closed_by_server(&mut tcp).await.unwrap();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let (addr, _stop) = server().await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = closed_by_server(&mut tcp).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("OK\n"), "{answer}");
    }

    #[tokio::test]
    async fn a_connection_that_sends_nothing_is_closed() {
        let (addr, _stop) = server().await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        closed_by_server(&mut tcp).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_in_flight_finishes_after_shutdown() {
        let (addr, stop) = server().await;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        STARTED.notified().await;
        drop(stop);
        let answer = closed_by_server(&mut tcp).await.unwrap();
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("slow\n"), "{answer}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still accepting");
    }
}
