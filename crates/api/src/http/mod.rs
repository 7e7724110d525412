//! The HTTP API. This module builds the router and holds the state every handler shares;
//! `dto` has the wire bodies, `extract` the extractors, `handlers` the routes, `openapi` the
//! generated document and `trace` the request id, span and access log.

pub mod adjustments;
pub mod dto;
pub mod extract;
pub mod handlers;
pub mod holds;
pub mod openapi;
pub mod orders;
pub mod trace;

use std::sync::Arc;
use std::time::Duration;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::{BoxError, Router};
use stockguard_core::Strategy;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::store::AnyStore;
pub use handlers::{DEFAULT_LEDGER_PAGE_LIMIT, IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER};
pub use openapi::{ApiDoc, openapi_pretty_json};
use stockguard_redis_gate::{Gate, GatedStore};

/// Request-independent policy the handlers apply. `Debug` leaves the token out.
pub struct Policy {
    /// Strategy used when a request names none.
    pub default_strategy: Strategy,
    /// Whether a request may name its own strategy.
    pub allow_strategy_override: bool,
    /// Bearer token required on mutations and the audit, if any.
    pub auth_token: Option<String>,
    /// Bearer token that may run the audit only, if any.
    pub audit_token: Option<String>,
    /// Largest request body, for the 413 message.
    pub body_limit_bytes: usize,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("default_strategy", &self.default_strategy)
            .field("allow_strategy_override", &self.allow_strategy_override)
            .field("auth_token", &self.auth_token.as_ref().map(|_| "<set>"))
            .field("audit_token", &self.audit_token.as_ref().map(|_| "<set>"))
            .field("body_limit_bytes", &self.body_limit_bytes)
            .finish()
    }
}

/// Shared state of every handler. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<AnyStore>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Policy.
    pub policy: Arc<Policy>,
    /// One permit: audits run one at a time, because each reads the whole ledger.
    pub audit_gate: Arc<Semaphore>,
    /// The same store behind the Redis admission gate, when the service has one: every
    /// change goes through it (see [`through_gate`]).
    pub gated: Option<Arc<GatedStore<AnyStore>>>,
}

/// Runs `$body` with `$store` bound to the store a change goes through: the Redis-gated store
/// when the service has a gate, the plain store otherwise.
macro_rules! through_gate {
    ($state:expr, $store:ident => $body:expr) => {
        match &$state.gated {
            Some($store) => $body,
            None => {
                let $store = &$state.store;
                $body
            }
        }
    };
}
pub(crate) use through_gate;

impl AppState {
    /// State for `store` under `settings`.
    pub fn new(store: Arc<AnyStore>, settings: &Settings) -> Self {
        Self {
            store,
            metrics: Arc::new(Metrics::default()),
            policy: Arc::new(Policy {
                default_strategy: settings.default_strategy,
                allow_strategy_override: settings.allow_strategy_override,
                auth_token: settings.auth_token.clone(),
                audit_token: settings.audit_token.clone(),
                body_limit_bytes: settings.body_limit_bytes,
            }),
            audit_gate: Arc::new(Semaphore::new(1)),
            gated: None,
        }
    }

    /// Puts `gate` in front of the store's changes (the same pools and coalescers).
    pub fn with_gate(mut self, gate: Arc<Gate>) -> Self {
        self.gated = Some(Arc::new(GatedStore::new((*self.store).clone(), gate)));
        self
    }

    /// The gate, if any.
    pub fn gate(&self) -> Option<&Arc<Gate>> {
        self.gated.as_ref().map(|gated| gated.gate())
    }
}

async fn route_not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "route_not_found",
        "Not found",
        "no such route",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "Method not allowed",
        "this route does not accept that method",
    )
}

/// Answers 413 at once when the declared Content-Length is over the body limit, before
/// anything (authentication, the concurrency limit, the handler) reads or waits for the body:
/// otherwise a client declaring gigabytes and sending a few bytes would hold the request open
/// until the request timeout. Bodies without a length (chunked) are capped while read by
/// `DefaultBodyLimit`.
async fn refuse_declared_oversize(
    State(limit_bytes): State<usize>,
    request: Request,
    next: Next,
) -> Response {
    let declared_bytes = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    let limit = u64::try_from(limit_bytes).unwrap_or(u64::MAX);
    if declared_bytes.is_some_and(|declared| declared > limit) {
        return ApiError::payload_too_large(limit_bytes).into_response();
    }
    next.run(request).await
}

/// Turns errors of the limit layers into problem documents.
async fn limit_error(metrics: Arc<Metrics>, error: BoxError) -> ApiError {
    if error.is::<tower::load_shed::error::Overloaded>() {
        metrics.record_shed();
        ApiError::unavailable(
            "overloaded",
            "Overloaded",
            "too many requests in flight; retry later",
            Duration::from_secs(1),
        )
    } else if error.is::<tower::timeout::error::Elapsed>() {
        metrics.record_timeout();
        ApiError::unavailable(
            "request_timeout",
            "Request timeout",
            "the request took too long; a deduction may or may not have committed, so retry with the same Idempotency-Key",
            Duration::from_secs(1),
        )
    } else {
        tracing::error!(error = %error, "unexpected middleware error");
        ApiError::internal()
    }
}

/// The whole application: `/v1` under the limits, operations endpoints outside them.
pub fn router(state: AppState, settings: &Settings) -> Router {
    let metrics = Arc::clone(&state.metrics);
    let limits = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(move |error: BoxError| {
            limit_error(Arc::clone(&metrics), error)
        }))
        .load_shed()
        // Global, not per route: `Router::layer` clones the layer for every route.
        .layer(GlobalConcurrencyLimitLayer::new(settings.concurrency_limit))
        .timeout(settings.request_timeout);
    let v1 = Router::new()
        .route("/v1/skus", post(handlers::create_sku))
        .route("/v1/skus/{sku}", get(handlers::get_stock))
        .route("/v1/skus/{sku}/restock", post(handlers::restock))
        .route("/v1/skus/{sku}/deduct", post(handlers::deduct))
        .route("/v1/skus/{sku}/ledger", get(handlers::ledger))
        .route("/v1/skus/{sku}/adjustments", post(adjustments::adjust))
        .route("/v1/orders", post(orders::place_order))
        .route("/v1/holds", post(holds::reserve))
        .route("/v1/holds/{hold_id}", get(holds::get_hold))
        .route("/v1/holds/{hold_id}/confirm", post(holds::confirm))
        .route("/v1/holds/{hold_id}/release", post(holds::release))
        .route("/v1/audit", get(handlers::audit))
        .layer(limits)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes))
        .layer(middleware::from_fn_with_state(
            settings.body_limit_bytes,
            refuse_declared_oversize,
        ));
    Router::new()
        .merge(v1)
        .route("/healthz", get(handlers::healthz))
        .route("/readyz", get(handlers::readyz))
        .route("/metrics", get(handlers::metrics_text))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(openapi::docs_ui())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            trace::trace_request,
        ))
        .with_state(state)
}
