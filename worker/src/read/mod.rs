//! The read proxy: what Nix substitutes from, served from the bucket with the worker's
//! own credentials (for private buckets, or one URL in front of any store), and the
//! binary cache index's files.

pub mod cache_info;
pub mod counted;
pub mod head;
pub mod headers;
pub mod index;
pub mod narinfo_cache;
pub mod object;

use axum::routing::get;
use axum::Router;

use crate::server::state::AppState;

/// Routes of the read proxy; any other path is looked up as an object key.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/nix-cache-info", get(cache_info::serve))
        .route("/nix-cache-index/{*path}", get(index::serve))
        .fallback(object::serve)
}
