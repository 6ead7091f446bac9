//! What every handler shares.

use std::sync::Arc;
use std::time::Duration;

use axum::http::HeaderMap;

use crate::auth::{Scope, TokenError, Tokens};
use crate::db::Db;
use crate::nix::SecretKey;
use crate::read::narinfo_cache::NarinfoCache;
use crate::storage::Storage;

use super::error::ApiError;

/// Read proxy settings.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Require a token with the `read` scope (Nix sends it from netrc).
    pub require_auth: bool,
    /// Answer NAR reads with a 307 to a presigned GET instead of streaming them.
    pub redirect_nars: bool,
    /// `Priority` in nix-cache-info.
    pub priority: u32,
    /// Bytes of recently read narinfos kept in memory (0: none).
    pub narinfo_cache_bytes: u64,
    /// How long a narinfo is answered from memory.
    pub narinfo_cache_ttl: Duration,
}

/// Lifetime of presigned upload URLs. niks3 clients expect 5 hours (long NAR uploads on
/// slow links); GC must not abandon sessions younger than this (see docs/gc.md).
pub const PRESIGN_TTL: Duration = Duration::from_secs(5 * 3600);

/// Shared state of one worker.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    db: Db,
    storage: Storage,
    keys: Vec<SecretKey>,
    tokens: Tokens,
    public_url: String,
    presign_ttl: Duration,
    read: ReadOptions,
    narinfos: NarinfoCache,
    gc_tasks: crate::admin::gc_task::GcTasks,
}

impl AppState {
    /// Bundles what the handlers need.
    pub fn new(
        db: Db,
        storage: Storage,
        keys: Vec<SecretKey>,
        tokens: Tokens,
        public_url: String,
        read: ReadOptions,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                db,
                storage,
                keys,
                tokens,
                public_url: public_url.trim_end_matches('/').to_string(),
                presign_ttl: PRESIGN_TTL,
                narinfos: NarinfoCache::new(read.narinfo_cache_bytes, read.narinfo_cache_ttl),
                read,
                gc_tasks: crate::admin::gc_task::GcTasks::default(),
            }),
        }
    }

    /// GC runs started through the admin API.
    pub fn gc_tasks(&self) -> &crate::admin::gc_task::GcTasks {
        &self.inner.gc_tasks
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.inner.db
    }

    /// The object store.
    pub fn storage(&self) -> &Storage {
        &self.inner.storage
    }

    /// Signing keys (the first one's public key is the one to advertise first).
    pub fn keys(&self) -> &[SecretKey] {
        &self.inner.keys
    }

    /// URL clients substitute from, without a trailing slash.
    pub fn public_url(&self) -> &str {
        &self.inner.public_url
    }

    /// How long presigned URLs live.
    pub fn presign_ttl(&self) -> Duration {
        self.inner.presign_ttl
    }

    /// Read proxy settings.
    pub fn read_options(&self) -> &ReadOptions {
        &self.inner.read
    }

    /// Narinfos recently read through the proxy.
    pub fn narinfo_cache(&self) -> &NarinfoCache {
        &self.inner.narinfos
    }

    /// Checks the request's bearer token for `scope`; returns the token's name, for logs.
    pub fn authorize(&self, headers: &HeaderMap, scope: Scope) -> Result<&str, ApiError> {
        let header = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        match self.inner.tokens.authorize(header, scope) {
            Ok(name) => Ok(name),
            Err(e) => {
                // Who was refused, by token name; the token itself is never logged.
                match &e {
                    TokenError::Forbidden { name, needed } => {
                        tracing::warn!(token = %name, scope = %needed, "refused: token lacks the scope")
                    }
                    TokenError::Invalid => tracing::info!(scope = %scope, "refused: unknown token"),
                    _ => tracing::debug!(scope = %scope, "refused: {e}"),
                }
                Err(e.into())
            }
        }
    }
}
