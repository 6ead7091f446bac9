//! The HTTP client of the read proxy's GETs: hyper-util's pooled client used directly,
//! with rustls only when the bucket's endpoint is https.
//!
//! reqwest wraps the same pooled client but, per request, parses the URL into a `Url`,
//! prints and parses it again for its redirect policy (even with redirects off) and for
//! `Response::url`, and checks its proxy matcher: about a fifth of the worker's time on an
//! uncached narinfo. A presigned S3 GET needs none of it: no redirects, no proxy, one
//! absolute URI parsed once.
//!
//! Like reqwest and the SDK, it respects `HTTP(S)_PROXY`/`NO_PROXY`, by declining: when
//! the environment routes the endpoint through a proxy there is no client, and the SDK,
//! which speaks to proxies, sends the GETs.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::{Request, Response, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_platform_verifier::BuilderVerifierExt;

/// How long an idle connection to S3 is kept for the next GET (reqwest's setting before).
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends body-less requests to one S3 endpoint over kept-alive HTTP/1.1 connections.
#[derive(Debug, Clone)]
pub(crate) struct GetClient(Transport);

#[derive(Debug, Clone)]
enum Transport {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<HttpsConnector<HttpConnector>, Empty<Bytes>>),
}

impl GetClient {
    /// A client for URLs starting with `base` (`http://…` or `https://…`); https verifies
    /// certificates as reqwest did (the platform's roots, rustls with aws-lc-rs). Errs
    /// when the environment sends `base` through a proxy.
    pub(crate) fn new(base: &str) -> Result<Self, String> {
        Self::with_proxies(base, &Matcher::from_env())
    }

    fn with_proxies(base: &str, proxies: &Matcher) -> Result<Self, String> {
        let uri = Uri::try_from(base).map_err(|e| format!("endpoint {base:?}: {e}"))?;
        if proxies.intercept(&uri).is_some() {
            return Err(format!("the environment routes {base} through a proxy"));
        }
        let scheme = uri.scheme_str().unwrap_or_default();
        let mut connector = HttpConnector::new();
        // Answers are small and latency matters more than packet count.
        connector.set_nodelay(true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_timer(TokioTimer::new());
        if scheme.eq_ignore_ascii_case("http") {
            return Ok(Self(Transport::Plain(builder.build(connector))));
        }
        if !scheme.eq_ignore_ascii_case("https") {
            return Err(format!("unsupported URL scheme {scheme:?}"));
        }
        // The inner connector sees `https://` URIs; the TLS layer wraps its streams.
        connector.enforce_http(false);
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_platform_verifier())
            .map_err(|e| format!("setting up TLS: {e}"))?
            .with_no_client_auth();
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .wrap_connector(connector);
        Ok(Self(Transport::Tls(builder.build(https))))
    }

    /// Sends `request` (an absolute URI) and returns the answer once its head arrived.
    pub(crate) async fn send(
        &self,
        request: Request<Empty<Bytes>>,
    ) -> Result<Response<Incoming>, Error> {
        match &self.0 {
            Transport::Plain(client) => client.request(request).await,
            Transport::Tls(client) => client.request(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_http_and_https_endpoints_without_a_proxy_get_a_client() {
        let none = Matcher::builder().build();
        let kind = |base: &str, proxies: &Matcher| {
            GetClient::with_proxies(base, proxies).map(|c| match c.0 {
                Transport::Plain(_) => "plain",
                Transport::Tls(_) => "tls",
            })
        };
        assert_eq!(kind("http://127.0.0.1:3900/bucket/", &none), Ok("plain"));
        assert_eq!(kind("HTTPS://s3.example.com/", &none), Ok("tls"));
        assert!(kind("ftp://s3.example.com/", &none).is_err());
        assert!(kind("not a url", &none).is_err());

        let proxied = Matcher::builder()
            .all("http://proxy.internal:3128")
            .no("127.0.0.1")
            .build();
        assert_eq!(kind("http://127.0.0.1:3900/b/", &proxied), Ok("plain"));
        assert!(kind("https://s3.example.com/", &proxied).is_err());
    }
}
