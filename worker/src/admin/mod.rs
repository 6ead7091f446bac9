//! The admin API (scope `admin`), as niks3's clients call it: GC runs, pins, closures.

pub mod closures;
pub mod gc_task;
pub mod gc_task_http;
pub mod pins;

use axum::routing::{delete, get, post};
use axum::Router;

use crate::server::state::AppState;

/// Routes of the admin API.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/closures", delete(gc_task_http::start))
        .route("/api/closures/{key}", get(closures::get))
        .route("/api/gc/status", get(gc_task_http::status))
        .route("/api/pins", get(pins::list))
        .route("/api/pins/{name}", post(pins::create).delete(pins::delete))
}

/// RFC 3339 (UTC, seconds) of Unix milliseconds, as niks3 formats times.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(0)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
