//! The read proxy's GETs without the SDK: a URL presigned by [`QuickPresigner`] and a
//! plain keep-alive HTTP client ([`GetClient`]). The SDK's request pipeline costs more per
//! request than a loopback or in-region S3 takes to answer a narinfo; this path costs a
//! signature (cached signing key) and one HTTP exchange.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::TryStreamExt;
use http_body_util::{BodyDataStream, Empty};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri};

use super::range::ContentRange;
use super::s3_error::{classify, error_of, retry_after};
use super::s3_http::GetClient;
use super::s3_presign::QuickPresigner;
use super::{ByteRange, Conditions, GetObject, Result, StorageError};
use crate::report::error_chain;

/// Lifetime of the URLs signed for the worker's own GETs (used at once).
const GET_URL_TTL: Duration = Duration::from_secs(300);
/// Most bytes of an error answer read to find its S3 error code.
const MAX_ERROR_BODY: usize = 16 * 1024;

/// GETs `full_key` (the store's prefix included) the way [`super::S3Store::get`] promises:
/// a range, conditions evaluated by S3, errors classified as the SDK path does. `key` is
/// the caller's key, for errors.
pub(crate) async fn get(
    http: &GetClient,
    quick: &QuickPresigner,
    full_key: &str,
    key: &str,
    range: Option<ByteRange>,
    conditions: &Conditions,
) -> Result<GetObject> {
    const OP: &str = "get";
    let mut request = presigned(quick, Method::GET, "GetObject", full_key, OP, key).await?;
    // Unsigned headers are allowed beside a presigned query (only x-amz-* must be signed).
    let headers = request.headers_mut();
    let mut set = |name: HeaderName, value: String| {
        HeaderValue::try_from(value)
            .map(|v| headers.insert(name, v))
            .map_err(|e| StorageError::other(OP, key, e))
    };
    if let Some(range) = range {
        set(header::RANGE, range.to_string())?;
    }
    if let Some(tags) = &conditions.if_none_match {
        set(header::IF_NONE_MATCH, tags.clone())?;
    }
    if let Some(since) = conditions.if_modified_since {
        set(header::IF_MODIFIED_SINCE, httpdate::fmt_http_date(since))?;
    }
    let response = http
        .send(request)
        .await
        .map_err(|e| StorageError::other(OP, key, error_chain(&e)))?;
    let status = response.status();
    if !status.is_success() {
        return Err(failure(OP, key, response).await);
    }
    let headers = response.headers();
    let size = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .ok_or_else(|| StorageError::other(OP, key, "answer without Content-Length"))?;
    let content_range = if status == StatusCode::PARTIAL_CONTENT {
        Some(
            text(headers, header::CONTENT_RANGE)
                .as_deref()
                .and_then(ContentRange::parse)
                .ok_or_else(|| {
                    StorageError::other(OP, key, "ranged answer without Content-Range")
                })?,
        )
    } else {
        None
    };
    let object = GetObject {
        size,
        total_size: content_range.map_or(size, |r| r.total),
        content_range,
        etag: text(headers, header::ETAG),
        last_modified: text(headers, header::LAST_MODIFIED)
            .and_then(|v| httpdate::parse_http_date(&v).ok()),
        content_type: text(headers, header::CONTENT_TYPE),
        content_encoding: text(headers, header::CONTENT_ENCODING),
        cache_control: text(headers, header::CACHE_CONTROL),
        body: Box::pin(futures::stream::empty()),
    };
    let owned = key.to_string();
    Ok(GetObject {
        body: Box::pin(
            BodyDataStream::new(response.into_body())
                .map_err(move |e| StorageError::other(OP, owned.clone(), error_chain(&e))),
        ),
        ..object
    })
}

/// A bodiless `method` request for `full_key`, presigned for S3 operation `x_id`; `op` and
/// `key` name it in errors.
pub(super) async fn presigned(
    quick: &QuickPresigner,
    method: Method,
    x_id: &str,
    full_key: &str,
    op: &'static str,
    key: &str,
) -> Result<Request<Empty<Bytes>>> {
    let url = quick
        .presign(
            method.as_str(),
            full_key,
            &[("x-id", x_id)],
            &[],
            GET_URL_TTL,
            SystemTime::now(),
        )
        .await
        .map_err(|e| StorageError::other(op, key, e))?;
    let uri = Uri::try_from(url).map_err(|e| StorageError::other(op, key, e))?;
    let mut request = Request::new(Empty::<Bytes>::new());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    Ok(request)
}

pub(super) fn text(headers: &HeaderMap, name: HeaderName) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The [`StorageError`] of a non-2xx answer, classified by status and S3 error code.
pub(super) async fn failure(
    op: &'static str,
    key: &str,
    response: Response<Incoming>,
) -> StorageError {
    let status = response.status().as_u16();
    let wait = retry_after(
        response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok()),
    );
    let object_size = response
        .headers()
        .get(header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes */"))
        .and_then(|v| v.parse::<u64>().ok());
    // 304 and HEAD-like answers have no body; errors carry a small XML document.
    let body = if status == 304 {
        String::new()
    } else {
        read_prefix(response, MAX_ERROR_BODY).await
    };
    let code = xml_element(&body, "Code");
    error_of(
        classify(Some(status), code),
        op,
        key,
        wait,
        object_size,
        || {
            format!(
                "S3 answered {status}{}{}",
                code.map(|c| format!(" {c}")).unwrap_or_default(),
                xml_element(&body, "Message")
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            )
        },
    )
}

/// At most `max` bytes of a body, lossily as text (an error document, for its code).
async fn read_prefix(response: Response<Incoming>, max: usize) -> String {
    let mut body = Vec::new();
    let mut stream = BodyDataStream::new(response.into_body());
    while let Ok(Some(chunk)) = stream.try_next().await {
        let room = max.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= max {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// The text of the first `<name>…</name>` in an S3 error document.
fn xml_element<'a>(xml: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = xml.find(&open)? + open.len();
    let len = xml[start..].find(&format!("</{name}>"))?;
    Some(xml[start..start + len].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_credential_types::Credentials;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A loopback "S3" answering every request with `answer` (then closing), and sending
    /// each request's head to the returned channel.
    async fn canned(
        answer: &'static str,
    ) -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}/bucket/", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = socket.read(&mut buf).await.unwrap();
                    assert!(n > 0, "request cut short");
                    head.extend_from_slice(&buf[..n]);
                }
                // Nobody may be listening for the requests.
                let _ = tx.send(String::from_utf8(head).unwrap());
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        });
        (base, rx)
    }

    async fn get_from(
        base: &str,
        range: Option<ByteRange>,
        conditions: &Conditions,
    ) -> Result<GetObject> {
        let provider = SharedCredentialsProvider::new(Credentials::for_tests());
        let probe = format!(
            "{base}{}?X-Amz-Signature=0",
            super::super::s3_presign::PROBE_KEY
        );
        let quick = QuickPresigner::new(&probe, "us-east-1".into(), provider).unwrap();
        let http = GetClient::new(quick.base()).unwrap();
        get(
            &http,
            &quick,
            "p/a b.narinfo",
            "a b.narinfo",
            range,
            conditions,
        )
        .await
    }

    #[tokio::test]
    async fn gets_send_range_and_conditions_and_stream_the_body() {
        let (base, mut requests) = canned(
            "HTTP/1.1 206 Partial Content\r\nContent-Length: 3\r\n\
             Content-Range: bytes 2-4/10\r\nETag: \"e\"\r\n\
             Last-Modified: Sun, 22 Nov 2026 05:00:00 GMT\r\nConnection: close\r\n\r\n234",
        )
        .await;
        let conditions = Conditions {
            if_none_match: Some("\"old\"".into()),
            if_modified_since: Some(SystemTime::UNIX_EPOCH),
        };
        let got = get_from(&base, ByteRange::parse("bytes=2-4").ok(), &conditions)
            .await
            .unwrap();
        assert_eq!((got.size, got.total_size), (3, 10));
        assert_eq!(got.content_range.unwrap().to_string(), "bytes 2-4/10");
        assert_eq!(got.etag.as_deref(), Some("\"e\""));
        assert!(got.last_modified.is_some());
        let body: Vec<Bytes> = got.body.try_collect().await.unwrap();
        assert_eq!(body.concat(), b"234");

        let head = requests.recv().await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("get /bucket/p/a%20b.narinfo?"), "{head}");
        assert!(head.contains("x-id=getobject"), "{head}");
        assert!(head.contains("\r\nhost: 127.0.0.1:"), "{head}");
        assert!(head.contains("\r\nrange: bytes=2-4\r\n"), "{head}");
        assert!(head.contains("\r\nif-none-match: \"old\"\r\n"), "{head}");
        assert!(
            head.contains("\r\nif-modified-since: thu, 01 jan 1970 00:00:00 gmt\r\n"),
            "{head}"
        );
    }

    #[tokio::test]
    async fn failed_gets_are_classified_by_status_and_code() {
        let (base, _) = canned(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 7\r\nContent-Length: 48\r\n\
             Connection: close\r\n\r\n<Error><Code>SlowDown</Code><Message>m</Message>",
        )
        .await;
        let err = get_from(&base, None, &Conditions::default()).await;
        assert!(
            matches!(err, Err(StorageError::Throttled { retry_after, .. }) if retry_after == Duration::from_secs(7)),
            "{err:?}"
        );

        let (base, _) = canned(
            "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */10\r\n\
             Content-Length: 0\r\nConnection: close\r\n\r\n",
        )
        .await;
        let err = get_from(&base, None, &Conditions::default()).await;
        assert!(
            matches!(err, Err(StorageError::InvalidRange { size: Some(10), .. })),
            "{err:?}"
        );

        for (answer, want) in [
            ("HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n", "304"),
            ("HTTP/1.1 412 Precondition Failed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "412"),
            ("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "404"),
            ("HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", "429"),
            ("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length", "no length"),
        ] {
            let (base, _) = canned(answer).await;
            let err = get_from(&base, None, &Conditions::default()).await;
            let ok = match want {
                "304" => matches!(err, Err(StorageError::NotModified { .. })),
                "412" => matches!(err, Err(StorageError::PreconditionFailed { .. })),
                "404" => matches!(err, Err(StorageError::NotFound { .. })),
                "429" => matches!(err, Err(StorageError::Throttled { .. })),
                _ => matches!(err, Err(StorageError::Other { .. })),
            };
            assert!(ok, "{want}: {err:?}");
        }
    }

    #[tokio::test]
    async fn https_endpoints_get_tls() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("https://{}/bucket/", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 3];
            socket.read_exact(&mut first).await.unwrap();
            first
        });
        // The "server" hangs up after the ClientHello's record header: the GET fails.
        let err = get_from(&base, None, &Conditions::default()).await;
        assert!(matches!(err, Err(StorageError::Other { .. })), "{err:?}");
        // A TLS handshake record (0x16), TLS 1.x record version (0x03 0x0_).
        let first = server.await.unwrap();
        assert_eq!(&first[..2], &[0x16, 0x03], "{first:?}");
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_is_an_error_naming_the_cause() {
        // A port that was free a moment ago: nothing listens there now.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = format!("http://127.0.0.1:{port}/bucket/");
        let err = get_from(&base, None, &Conditions::default()).await;
        match err {
            Err(StorageError::Other { message, .. }) => {
                assert!(
                    message.to_ascii_lowercase().contains("refused"),
                    "{message}"
                );
                assert!(!message.contains("Signature"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn s3_error_documents_give_their_code_and_message() {
        let xml = "<?xml version=\"1.0\"?><Error><Code>NoSuchKey</Code>\
                   <Message>The specified key does not exist.</Message></Error>";
        assert_eq!(xml_element(xml, "Code"), Some("NoSuchKey"));
        assert_eq!(
            xml_element(xml, "Message"),
            Some("The specified key does not exist.")
        );
        assert_eq!(xml_element(xml, "Resource"), None);
        assert_eq!(xml_element("<Code>unterminated", "Code"), None);
        assert_eq!(xml_element("", "Code"), None);
    }
}
