//! `/metrics` in the Prometheus text format, and the middleware that counts requests.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a served request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route pattern (`/api/pending_closures/{id}/sign`), or `object` for reads.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Status code.
    pub status: u16,
}

/// Labels of what the read proxy served: the object type (`narinfo`, `nar`, …).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    /// Object type, as the wire names it.
    pub kind: &'static str,
}

/// Labels of a narinfo cache lookup.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    /// `hit` or `miss`.
    pub result: &'static str,
}

/// The worker's metrics registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Registry>,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RequestLabels, Histogram>,
    read_bytes: Family<KindLabels, Counter>,
    narinfo_lookups: Family<LookupLabels, Counter>,
    gc: GcGauges,
    sessions: SessionGauges,
}

/// Open upload sessions, read from the database at every scrape (every worker sees all).
#[derive(Clone, Default)]
struct SessionGauges {
    open: Gauge,
    oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl SessionGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "pending_closures",
            "Upload sessions started and not yet committed or cleaned up",
            self.open.clone(),
        );
        registry.register(
            "pending_closure_oldest_age_seconds",
            "Age of the oldest open upload session (0 when none): a push that never \
             finished, until cleanup removes it",
            self.oldest_age.clone(),
        );
    }

    fn set(&self, open: &crate::db::pending::OpenSessions, now_ms: i64) {
        self.open.set(open.count);
        let age = open.oldest_started_ms.map_or(0, |t| (now_ms - t).max(0));
        self.oldest_age.set(age as f64 / 1000.0);
    }
}

/// Labels of GC runs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GcRunLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// GC totals, read from the database at every scrape so CronJob runs count too.
#[derive(Clone, Default)]
struct GcGauges {
    runs: Family<GcRunLabels, Gauge>,
    objects_deleted: Gauge,
    bytes_deleted: Gauge,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    last_duration: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl GcGauges {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "gc_runs",
            "GC runs against this database, by result",
            self.runs.clone(),
        );
        registry.register(
            "gc_objects_deleted",
            "Objects deleted by all GC runs",
            self.objects_deleted.clone(),
        );
        registry.register(
            "gc_bytes_deleted",
            "Bytes deleted by all GC runs",
            self.bytes_deleted.clone(),
        );
        registry.register(
            "gc_last_success_timestamp_seconds",
            "End of the last successful GC run (Unix time)",
            self.last_success.clone(),
        );
        registry.register(
            "gc_last_duration_seconds",
            "Duration of the last successful GC run",
            self.last_duration.clone(),
        );
    }

    fn set(&self, stats: &crate::db::gc_stats::GcStats) {
        let result = |result| GcRunLabels { result };
        self.runs
            .get_or_create(&result("success"))
            .set(stats.runs_succeeded);
        self.runs
            .get_or_create(&result("failure"))
            .set(stats.runs_failed);
        self.objects_deleted.set(stats.objects_deleted);
        self.bytes_deleted.set(stats.bytes_deleted);
        self.last_success.set(stats.last_success_ms as f64 / 1000.0);
        self.last_duration
            .set(stats.last_duration_ms as f64 / 1000.0);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with the HTTP metrics registered.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("larder");
        let requests = Family::<RequestLabels, Counter>::default();
        let duration = Family::<RequestLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 16))
        });
        registry.register("http_requests", "HTTP requests served", requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time to the response head",
            duration.clone(),
        );
        let read_bytes = Family::<KindLabels, Counter>::default();
        registry.register(
            "read_body_bytes",
            "Body bytes the read proxy sent, by object type",
            read_bytes.clone(),
        );
        let narinfo_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "narinfo_cache_lookups",
            "Narinfo reads answered from memory (hit) or from storage (miss)",
            narinfo_lookups.clone(),
        );
        let gc = GcGauges::default();
        gc.register(&mut registry);
        let sessions = SessionGauges::default();
        sessions.register(&mut registry);
        Metrics {
            registry: Arc::new(registry),
            requests,
            duration,
            read_bytes,
            narinfo_lookups,
            gc,
            sessions,
        }
    }

    /// The counter of body bytes sent for objects of `kind`.
    pub fn read_bytes(&self, kind: crate::nix::ObjectType) -> Counter {
        self.read_bytes
            .get_or_create(&KindLabels {
                kind: kind.as_str(),
            })
            .clone()
    }

    /// Counts one narinfo cache lookup.
    pub fn narinfo_lookup(&self, hit: bool) {
        let result = if hit { "hit" } else { "miss" };
        self.narinfo_lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }
}

/// Middleware: counts and times every request.
pub async fn track(State(metrics): State<Metrics>, mut request: Request, next: Next) -> Response {
    request.extensions_mut().insert(metrics.clone());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "object".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let start = Instant::now();
    let response = next.run(request).await;
    let labels = RequestLabels {
        route,
        method,
        status: response.status().as_u16(),
    };
    metrics.requests.get_or_create(&labels).inc();
    metrics
        .duration
        .get_or_create(&labels)
        .observe(start.elapsed().as_secs_f64());
    response
}

/// `GET /metrics`.
pub async fn serve(
    State(state): State<crate::server::state::AppState>,
    request: Request,
) -> Response {
    let Some(metrics) = request.extensions().get::<Metrics>().cloned() else {
        return "# no metrics\n".into_response();
    };
    match crate::db::gc_stats::read(state.db()).await {
        Ok(stats) => metrics.gc.set(&stats),
        // Keep serving the request metrics; the GC gauges keep their last values.
        Err(e) => tracing::warn!("cannot read GC statistics for /metrics: {e}"),
    }
    match crate::db::pending::open_sessions(state.db()).await {
        Ok(open) => metrics.sessions.set(&open, crate::db::now_ms()),
        Err(e) => tracing::warn!("cannot count upload sessions for /metrics: {e}"),
    }
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &metrics.registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics",
        )
            .into_response();
    }
    let mut response = text.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    response
}
