//! Requests written byte for byte to a socket: what HTTP clients will not send (paths
//! they normalise, a body announced but never sent), as an attacker or a broken client
//! would.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `head` (request line, headers, the blank line, and any body bytes) to the
/// server at `base` (`http://host:port`), reads until the server closes, and returns the
/// answer's status. Panics if the server has not answered and closed within 10 s (a
/// server waiting for a body it should refuse from the headers alone).
pub async fn status(base: &str, head: &str) -> u16 {
    let mut stream = tokio::net::TcpStream::connect(authority(base))
        .await
        .unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let read =
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    assert!(read.is_ok(), "no complete answer within 10 s to {head:?}");
    let text = String::from_utf8_lossy(&response);
    text.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {text:?}"))
}

/// `host:port` of `http://host:port/`.
pub fn authority(base: &str) -> &str {
    base.trim_start_matches("http://").trim_end_matches('/')
}
