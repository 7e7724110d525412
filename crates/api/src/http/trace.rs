//! Per-request tracing: the request id, the request span, the access log line and the
//! latency metric.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument as _;
use tracing::field::Empty;

use super::AppState;

/// Header carrying the request id, both ways.
pub const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static("x-request-id");
/// Longest request id taken from a client; a longer one is replaced, so a client cannot make
/// every log line of its requests arbitrarily long.
pub const REQUEST_ID_MAX_LEN: usize = 128;
/// Target of the access log lines, so they can be filtered on their own
/// (`RUST_LOG=info,stockguard::access=warn` silences them).
pub const ACCESS_LOG_TARGET: &str = "stockguard::access";

/// The client's `x-request-id` when it is 1 to [`REQUEST_ID_MAX_LEN`] characters of
/// `A-Z a-z 0-9` and `- _ . : / + = @` (UUIDs, ULIDs, hex, base64 and the usual tracer
/// formats), so it is safe to log and echo; otherwise a new random one.
fn request_id(request: &Request) -> String {
    let given = request
        .headers()
        .get(&REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| {
            (1..=REQUEST_ID_MAX_LEN).contains(&id.len())
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b))
        });
    match given {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

/// Runs the request inside a `request` span (request id; handlers add the SKU, strategy,
/// attempts and outcome), then records its latency, writes one INFO access log line (method,
/// route template, status, latency) and returns the request id in `x-request-id`.
pub(crate) async fn trace_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&request);
    // Clones without allocating (a standard method is inline, a matched path is an `Arc`):
    // this runs on every request.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        sku = Empty,
        strategy = Empty,
        attempts = Empty,
        outcome = Empty,
    );
    let mut response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    state
        .metrics
        .record_request(method.as_str(), route, status, elapsed);
    span.in_scope(|| {
        tracing::info!(
            target: ACCESS_LOG_TARGET,
            method = %method,
            route = %route,
            status,
            // Whole microseconds: the float's last digits would be noise.
            latency_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            "request"
        );
    });
    // The id passed the character check above or is a UUID, so it is a valid header value.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Records a request's SKU on its span.
pub(crate) fn record_sku(sku: &str) {
    tracing::Span::current().record("sku", tracing::field::display(sku));
}
