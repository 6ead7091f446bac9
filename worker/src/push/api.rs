//! HTTP to the worker's upload API and to presigned URLs, every request retried per
//! [`RetryPolicy`]. Only API requests carry the token: presigned URLs carry their own
//! authorisation, and S3 refuses a request that has both.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::{header, Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::wire::{
    CompleteMultipartRequest, DeclareFilesRequest, DeclareFilesResponse, PendingClosureRequest,
    PendingClosureResponse, RequestPartsRequest, RequestPartsResponse, SignRequest, SignResponse,
    DECLARE_FILES,
};

use super::retry::{jitter, Decision, Outcome, RetryPolicy};
use super::PushError;
use crate::report::error_chain;

/// How `complete` ended.
#[derive(Debug)]
pub enum Completion {
    /// The worker answered that it committed the session.
    Committed,
    /// An attempt went unanswered, and a retry found the session gone: committed by
    /// that attempt, or expired. The error is the retry's 404.
    Gone(PushError),
}

/// A client of one worker.
#[derive(Debug, Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    retry: RetryPolicy,
}

impl Api {
    /// A client for the worker at `server` (`http(s)://host[:port][/prefix]`).
    pub fn new(
        http: reqwest::Client,
        server: &str,
        token: Option<String>,
        retry: RetryPolicy,
    ) -> Result<Self, PushError> {
        // The rule the --server flag applies, again for callers that build options in code.
        crate::cli::values::http_url(server)
            .map_err(|e| PushError::Config(format!("--server {server:?}: {e}")))?;
        Ok(Self {
            http,
            base: server.trim_end_matches('/').to_string(),
            token,
            retry,
        })
    }

    /// The HTTP client, for presigned URLs.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The retry policy.
    pub fn retry(&self) -> RetryPolicy {
        self.retry
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn post_json<B: Serialize, T: DeserializeOwned>(
        &self,
        step: &str,
        path: &str,
        body: &B,
    ) -> Result<T, PushError> {
        let response = send(step, self.retry, || {
            self.request(Method::POST, path).json(body)
        })
        .await
        .map_err(|e| self.explain_refusal(e))?;
        response.json().await.map_err(|e| PushError::Http {
            step: step.to_string(),
            status: None,
            message: format!("unexpected answer: {e}"),
        })
    }

    /// Adds what to do to a 401 or 403: the server's own words ("missing bearer token")
    /// do not say where a push token comes from.
    fn explain_refusal(&self, error: PushError) -> PushError {
        let hint = match (&error, &self.token) {
            (
                PushError::Http {
                    status: Some(401), ..
                },
                None,
            ) => {
                "no push token was given: pass --token-file FILE or set LARDER_TOKEN \
                 (`larder serve` writes one to push-token in its data dir)"
            }
            (
                PushError::Http {
                    status: Some(401), ..
                },
                Some(_),
            ) => "the server does not know this push token: check --token-file or LARDER_TOKEN",
            (
                PushError::Http {
                    status: Some(403), ..
                },
                _,
            ) => "this token may not push: the server's token file must give it the push scope",
            _ => return error,
        };
        match error {
            PushError::Http {
                step,
                status,
                message,
            } => PushError::Http {
                step,
                status,
                message: format!("{message}; {hint}"),
            },
            other => other,
        }
    }

    /// Whether the server takes file declarations after the start of a session (a
    /// Larder worker; niks3-server and older workers do not, and their presigned PUTs
    /// then go unchecked by the storage). `GET /api/cache-config`'s `features`.
    pub async fn declares_files(&self) -> Result<bool, PushError> {
        #[derive(serde::Deserialize)]
        struct Features {
            #[serde(default)]
            features: Vec<String>,
        }
        let step = "ask the server what it supports";
        let response = send(step, self.retry, || {
            self.request(Method::GET, "/api/cache-config")
        })
        .await
        .map_err(|e| match e {
            // The first request: unanswered or unknown, the URL is the likely mistake.
            PushError::Http {
                step,
                status: status @ (None | Some(404)),
                message,
            } => PushError::Http {
                step,
                status,
                message: format!(
                    "{message}; is {} the URL `larder serve` printed, and is it running?",
                    self.base
                ),
            },
            other => other,
        })?;
        let config: Features = response.json().await.map_err(|e| PushError::Http {
            step: step.to_string(),
            status: None,
            message: format!("unexpected answer: {e}"),
        })?;
        Ok(config.features.iter().any(|f| f == DECLARE_FILES))
    }

    /// `POST /api/pending_closures`.
    pub async fn start(
        &self,
        req: &PendingClosureRequest,
    ) -> Result<PendingClosureResponse, PushError> {
        let step = format!("start the upload of the closure of {}", req.closure);
        self.post_json(&step, "/api/pending_closures", req).await
    }

    /// `POST /api/pending_closures/{id}/sign`.
    pub async fn sign(&self, id: &str, req: &SignRequest) -> Result<SignResponse, PushError> {
        let step = format!(
            "sign {} narinfo(s) in pending closure {id}",
            req.narinfos.len()
        );
        self.post_json(&step, &format!("/api/pending_closures/{id}/sign"), req)
            .await
    }

    /// Larder's `POST /api/pending_closures/{id}/files`: hashes of compressed objects,
    /// answered with PUTs bound to them.
    pub async fn declare_files(
        &self,
        id: &str,
        req: &DeclareFilesRequest,
    ) -> Result<DeclareFilesResponse, PushError> {
        let step = format!(
            "declare {} file(s) in pending closure {id}",
            req.files.len()
        );
        self.post_json(&step, &format!("/api/pending_closures/{id}/files"), req)
            .await
    }

    /// `POST /api/pending_closures/{id}/complete`.
    pub async fn complete(&self, id: &str, root: &str) -> Result<Completion, PushError> {
        let step = format!("complete pending closure {id} ({root})");
        let path = format!("/api/pending_closures/{id}/complete");
        let attempts = AtomicU32::new(0);
        let sent = send(&step, self.retry, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            self.request(Method::POST, &path)
        })
        .await;
        match sent {
            Ok(_) => Ok(Completion::Committed),
            // Only unanswered attempts (a reset, a timeout, a 5xx from a proxy) are
            // retried, and the worker may have committed during one of them: then the
            // session is gone when the retry arrives.
            Err(
                e @ PushError::Http {
                    status: Some(404), ..
                },
            ) if attempts.load(Ordering::Relaxed) > 1 => Ok(Completion::Gone(e)),
            Err(e) => Err(e),
        }
    }

    /// `POST /api/multipart/request-parts`.
    pub async fn request_parts(
        &self,
        req: &RequestPartsRequest,
    ) -> Result<RequestPartsResponse, PushError> {
        let step = format!(
            "request part URLs {}.. of {}",
            req.start_part_number, req.object_key
        );
        self.post_json(&step, "/api/multipart/request-parts", req)
            .await
    }

    /// `POST /api/multipart/complete`.
    pub async fn complete_multipart(
        &self,
        req: &CompleteMultipartRequest,
    ) -> Result<(), PushError> {
        let step = format!("complete the multipart upload of {}", req.object_key);
        send(&step, self.retry, || {
            self.request(Method::POST, "/api/multipart/complete")
                .json(req)
        })
        .await?;
        Ok(())
    }

    /// `HEAD /api/objects/{key}`: whether the cache holds `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, PushError> {
        let step = format!("check whether the cache holds {key}");
        let path = format!("/api/objects/{key}");
        match send(&step, self.retry, || self.request(Method::HEAD, &path)).await {
            Ok(_) => Ok(true),
            Err(PushError::Http {
                status: Some(404), ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Sends the request `build` makes until it succeeds (2xx), fails for good, or the
/// attempts are used up. Errors carry `step`, the status and the server's message.
pub async fn send(
    step: &str,
    policy: RetryPolicy,
    build: impl Fn() -> RequestBuilder,
) -> Result<Response, PushError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let (outcome, error) = match build().send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let body = response.text().await.unwrap_or_default();
                (
                    Outcome::Status {
                        status: status.as_u16(),
                        retry_after,
                    },
                    http_error(step, status, &body),
                )
            }
            // Our own words, whole: the useful part ("Connection refused") is at the end.
            Err(e) => (
                Outcome::Transport,
                PushError::Http {
                    step: step.to_string(),
                    status: None,
                    message: error_chain(&e),
                },
            ),
        };
        match policy.decide(attempt, &outcome, jitter(), SystemTime::now()) {
            Decision::GiveUp => return Err(with_attempts(error, attempt)),
            Decision::RetryAfter(wait) => {
                tracing::debug!(step, attempt, ?wait, "retrying: {error}");
                tokio::time::sleep(wait.min(Duration::from_secs(600))).await;
            }
        }
    }
}

/// An error answer; the server's body is cut short (a proxy may answer with a page).
fn http_error(step: &str, status: StatusCode, body: &str) -> PushError {
    let mut message = format!("HTTP {status}");
    let body = body.trim();
    if !body.is_empty() {
        message.push_str(": ");
        message.push_str(&crate::nix::preview(body));
    }
    PushError::Http {
        step: step.to_string(),
        status: Some(status.as_u16()),
        message,
    }
}

fn with_attempts(error: PushError, attempts: u32) -> PushError {
    match error {
        PushError::Http {
            step,
            status,
            message,
        } if attempts > 1 => PushError::Http {
            step,
            status,
            message: format!("{message} (after {attempts} attempts)"),
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_must_be_an_http_url_with_a_host() {
        let api =
            |server: &str| Api::new(reqwest::Client::new(), server, None, RetryPolicy::default());
        assert!(api("http://127.0.0.1:5050").is_ok());
        assert!(api("https://cache.example.org/prefix/").is_ok());
        for bad in ["cache.example.org", "ftp://x", "http://", "unix:/tmp/s"] {
            let Err(PushError::Config(message)) = api(bad) else {
                panic!("{bad} was accepted");
            };
            assert!(message.contains("--server"), "{message}");
        }
    }
}
