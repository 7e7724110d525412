//! The route handlers, each with its OpenAPI operation.

use super::through_gate;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stockguard_core::{DeductRequest, IdempotencyKey, InventoryStore, LedgerPage, Quantity, SkuId, Strategy};
use stockguard_redis_gate::RedisDownPolicy;

use super::AppState;
use super::dto::{
    AuditResponse, CreateSkuRequest, DeductBody, DeductReceipt, HealthResponse, LedgerPageResponse,
    LedgerQuery, LedgerRow, RestockRequest, RestockResponse, StockResponse,
};
use super::extract::{AuditAuthorized, Authorized, JsonBody, sku_from_path};
use crate::problem::{ApiError, ProblemDetails};

/// Header carrying the client's idempotency key on deductions.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set to `true` when a deduction replayed an earlier receipt.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Ledger page size when the request names none.
pub const DEFAULT_LEDGER_PAGE_LIMIT: u32 = 100;
/// What a refused concurrent audit is told to wait before retrying.
const AUDIT_BUSY_RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long `/readyz` waits for the database.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Create a SKU with its initial stock.
#[utoipa::path(
    post, path = "/v1/skus", tag = "inventory",
    request_body = CreateSkuRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = StockResponse),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "already_exists", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input (including a body that is not a JSON object)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn create_sku(
    State(state): State<AppState>,
    _auth: Authorized,
    JsonBody(body): JsonBody<CreateSkuRequest>,
) -> Result<(StatusCode, Json<StockResponse>), ApiError> {
    let sku = SkuId::parse(body.sku).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    super::trace::record_sku(sku.as_str());
    let level = through_gate!(state, store => store.create_sku(&sku, body.initial_stock).await)?;
    Ok((StatusCode::CREATED, Json(level.into())))
}

/// Current stock of one SKU.
#[utoipa::path(
    get, path = "/v1/skus/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$")),
    responses(
        (status = 200, description = "Stock, with the row's version as the `ETag`", body = StockResponse,
            headers(("ETag" = String, description = "The SKU row's version, quoted: send it back as `If-Match` to deduct conditionally"))),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_stock(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let sku = sku_from_path(path)?;
    let level = state.store.stock(&sku).await?;
    let etag = format!("\"{}\"", level.version);
    let mut response = Json(StockResponse::from(level)).into_response();
    if let Ok(value) = HeaderValue::from_str(&etag) {
        response.headers_mut().insert(header::ETAG, value);
    }
    Ok(response)
}

/// The version a conditional deduction names: the body's `expected_version`, or the
/// `If-Match` header (one strong entity tag, the version quoted; unquoted is accepted).
fn expected_version(headers: &HeaderMap, body: Option<i64>) -> Result<Option<i64>, ApiError> {
    let Some(raw) = headers.get(header::IF_MATCH) else {
        return Ok(body);
    };
    let tag = raw
        .to_str()
        .ok()
        .map(str::trim)
        .map(|tag| {
            tag.strip_prefix('"')
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or(tag)
        })
        .and_then(|tag| tag.parse::<i64>().ok())
        .ok_or_else(|| {
            ApiError::invalid_input(
                "If-Match must be one version, as the ETag of GET /v1/skus/{sku} gives it",
            )
        })?;
    match body {
        Some(version) if version != tag => Err(ApiError::invalid_input(
            "If-Match and expected_version name different versions",
        )),
        _ => Ok(Some(tag)),
    }
}

/// Add units (writes one ledger row).
#[utoipa::path(
    post, path = "/v1/skus/{sku}/restock", tag = "inventory",
    params(
        ("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–128 printable ASCII characters without spaces"),
    ),
    request_body = RestockRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restocked", body = RestockResponse),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input (including a body that is not a JSON object, or a restock past the stock maximum)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (retry with the key), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn restock(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<RestockRequest>,
) -> Result<Response, ApiError> {
    let sku = sku_from_path(path)?;
    let quantity = Quantity::new(body.quantity).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let mut request = stockguard_core::RestockRequest::new(sku, quantity);
    if let Some(key) = idempotency_key(&headers)? {
        request = request.with_idempotency_key(key);
    }
    let receipt = through_gate!(state, store => store.restock(request).await)?;
    let (key, replayed) = (receipt.idempotency_key.clone(), receipt.replayed);
    Ok(keyed_response(RestockResponse::from(receipt), &key, replayed))
}

/// Deduct units, never below zero.
///
/// With an `Idempotency-Key`, repeating the same SKU and quantity returns the original
/// receipt (`replayed: true`, header `Idempotent-Replayed: true`) and changes nothing; the
/// same key with another SKU or quantity is 422 `idempotency_key_reused`. The strategy is
/// not part of the idempotent identity.
#[utoipa::path(
    post, path = "/v1/skus/{sku}/deduct", tag = "inventory",
    params(
        ("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–128 printable ASCII characters without spaces"),
        ("If-Match" = Option<String>, Header, description = "Deduct only at this SKU row version: the `ETag` of `GET /v1/skus/{sku}` (same as `expected_version`)"),
    ),
    request_body = DeductBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deducted (or replayed)", body = DeductReceipt),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "insufficient_stock (with `available`) or conflict (retries exhausted)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 412, description = "version_mismatch: a conditional deduction's version moved (with `current_version`); nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input (including a body that is not a JSON object) or idempotency_key_reused", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (retry with the key), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn deduct(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<DeductBody>,
) -> Result<Response, ApiError> {
    let sku = sku_from_path(path)?;
    let quantity = Quantity::new(body.quantity).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let strategy = match body.strategy.map(Strategy::from) {
        None => state.policy.default_strategy,
        Some(strategy) if strategy == state.policy.default_strategy => strategy,
        Some(strategy) if state.policy.allow_strategy_override => strategy,
        Some(strategy) => {
            return Err(ApiError::invalid_input(format!(
                "this server does not allow choosing a strategy per request (asked for {strategy}, default is {})",
                state.policy.default_strategy
            )));
        }
    };
    let span = tracing::Span::current();
    span.record("strategy", tracing::field::display(strategy));
    let mut request = DeductRequest::new(sku, quantity, strategy);
    if let Some(key) = idempotency_key(&headers)? {
        request = request.with_idempotency_key(key);
    }
    if let Some(version) = expected_version(&headers, body.expected_version)? {
        request = request.with_expected_version(version);
    }
    match through_gate!(state, store => store.deduct(request).await) {
        Ok(receipt) => {
            let outcome = if receipt.replayed { "replayed" } else { "ok" };
            span.record("outcome", tracing::field::display(outcome));
            span.record("attempts", receipt.attempts);
            state.metrics.record_deduction(strategy, outcome);
            if !receipt.replayed {
                state
                    .metrics
                    .record_receipt(strategy, receipt.attempts, receipt.lock_wait_us);
            }
            let (key, replayed) = (receipt.idempotency_key.clone(), receipt.replayed);
            Ok(keyed_response(
                DeductReceipt::new(receipt, strategy),
                &key,
                replayed,
            ))
        }
        Err(error) => {
            span.record("outcome", tracing::field::display(error.kind()));
            state.metrics.record_deduction(strategy, error.kind());
            Err(error.into())
        }
    }
}

/// The request's `Idempotency-Key`, parsed, if it sent one.
pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
    let Some(raw) = headers.get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let raw = raw
        .to_str()
        .map_err(|_| ApiError::invalid_input("the Idempotency-Key header must be printable ASCII"))?;
    IdempotencyKey::parse(raw)
        .map(Some)
        .map_err(|e| ApiError::invalid_input(e.to_string()))
}

/// A JSON receipt with the key in the `Idempotency-Key` header and, for a replay,
/// `Idempotent-Replayed: true`.
pub(crate) fn keyed_response(body: impl Serialize, key: &IdempotencyKey, replayed: bool) -> Response {
    let mut response = Json(body).into_response();
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(key.as_str()) {
        headers.insert(IDEMPOTENCY_KEY_HEADER, value);
    }
    if replayed {
        headers.insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// A page of one SKU's ledger, oldest first.
#[utoipa::path(
    get, path = "/v1/skus/{sku}/ledger", tag = "inventory",
    params(
        ("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$"),
        LedgerQuery,
    ),
    responses(
        (status = 200, description = "Ledger page", body = LedgerPageResponse),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn ledger(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    query: Result<Query<LedgerQuery>, QueryRejection>,
) -> Result<Json<LedgerPageResponse>, ApiError> {
    let sku = sku_from_path(path)?;
    let Query(query) = query.map_err(|e| ApiError::invalid_input(format!("invalid query: {e}")))?;
    let limit = query.limit.unwrap_or(DEFAULT_LEDGER_PAGE_LIMIT);
    let page =
        LedgerPage::after(query.after_id, limit).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let entries = state.store.ledger(&sku, page).await?;
    let full_page = u32::try_from(entries.len()).is_ok_and(|n| n == limit);
    let next_after_id = if full_page {
        entries.last().map(|e| e.id)
    } else {
        None
    };
    Ok(Json(LedgerPageResponse {
        entries: entries.into_iter().map(LedgerRow::from).collect(),
        next_after_id,
    }))
}

/// Reconcile every SKU: stock ≥ 0 and initial + Σ ledger deltas = stock.
///
/// Reads the whole ledger, so it needs a token when the server has one (the auth token or the
/// audit-only token), and runs one at a time: a second audit while one runs is refused with
/// 429 `audit_in_progress`.
#[utoipa::path(
    get, path = "/v1/audit", tag = "inventory",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Audit report (check `clean`)", body = AuditResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 429, description = "audit_in_progress: another audit is running; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn audit(
    State(state): State<AppState>,
    _auth: AuditAuthorized,
) -> Result<Json<AuditResponse>, ApiError> {
    // Held until the report is built, and released if the request is dropped (timeout or
    // client gone), so a cancelled audit never blocks the next one.
    let _permit = state.audit_gate.try_acquire().map_err(|_| {
        ApiError::too_many_requests(
            "audit_in_progress",
            "Audit in progress",
            "another audit is running; retry when it has finished",
            AUDIT_BUSY_RETRY_AFTER,
        )
    })?;
    Ok(Json(state.store.audit().await?.into()))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
pub(crate) async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
        backend: None,
        redis: None,
    })
}

/// Readiness: the database answers a trivial query within 2 s; with a Redis gate, its state
/// is reported, and a down gate that fails closed makes the service not ready.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Database unreachable, or the Redis gate down under fail-closed", body = ProblemDetails, content_type = "application/problem+json"),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    let not_ready = |detail: &str| {
        ApiError::unavailable(
            "not_ready",
            "Not ready",
            format!("the database is not reachable: {detail}"),
            Duration::from_secs(1),
        )
    };
    let redis = match state.gate() {
        None => None,
        Some(gate) if gate.ping().await => Some("up"),
        Some(gate) if gate.config().when_down == RedisDownPolicy::FailClosed => {
            return Err(ApiError::unavailable(
                "not_ready",
                "Not ready",
                "the Redis admission gate is down and the service fails closed",
                Duration::from_secs(1),
            ));
        }
        Some(_) => Some("down"),
    };
    match tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(HealthResponse {
            status: "ready".to_owned(),
            backend: Some(state.store.backend().to_owned()),
            redis: redis.map(str::to_owned),
        })),
        Ok(Err(error)) => {
            tracing::warn!(error = %crate::problem::error_chain(&error), "readiness check failed");
            Err(not_ready(error.kind()))
        }
        Err(_) => Err(not_ready("timed out")),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Metrics", body = String, content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .render(&state.store, state.gate().map(|gate| &**gate));
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}
