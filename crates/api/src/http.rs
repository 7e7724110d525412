//! The HTTP API: routes, extractors, request/response bodies and the OpenAPI document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::error_handling::HandleErrorLayer;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request, State,
};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{BoxError, Json, Router};
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use stockguard_core::{
    AuditReport, DeductRequest, IdempotencyKey, InventoryStore, LedgerEntry, LedgerPage, Quantity, Receipt,
    RestockReceipt, SkuId, StockLevel, Strategy,
};
use subtle::ConstantTimeEq;
use tower::ServiceBuilder;
use tower::limit::GlobalConcurrencyLimitLayer;
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi, ToSchema};
use utoipa_scalar::{Scalar, Servable};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::problem::{ApiError, ProblemDetails};
use crate::store::AnyStore;

/// Header carrying the client's idempotency key on deductions.
pub const IDEMPOTENCY_KEY_HEADER: &str = "idempotency-key";
/// Response header set to `true` when a deduction replayed an earlier receipt.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";
/// Ledger page size when the request names none.
pub const DEFAULT_LEDGER_PAGE_LIMIT: u32 = 100;
/// How long `/readyz` waits for the database.
const READINESS_TIMEOUT: Duration = Duration::from_secs(2);

/// Request-independent policy the handlers apply.
#[derive(Debug)]
pub struct Policy {
    /// Strategy used when a request names none.
    pub default_strategy: Strategy,
    /// Whether a request may name its own strategy.
    pub allow_strategy_override: bool,
    /// Bearer token required on mutations, if any.
    pub auth_token: Option<String>,
    /// Largest request body, for the 413 message.
    pub body_limit_bytes: usize,
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
}

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
                body_limit_bytes: settings.body_limit_bytes,
            }),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bodies
// ---------------------------------------------------------------------------------------

/// A strategy name, as accepted in requests.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    /// `SELECT … FOR UPDATE`, check, write.
    Pessimistic,
    /// As pessimistic, but fail at once (503 lock_timeout) if the row is locked.
    NoWait,
    /// Version check and retry.
    Optimistic,
    /// One conditional `UPDATE … WHERE stock >= q`.
    Guarded,
    /// Group commit of concurrent deductions of one SKU.
    Coalesced,
    /// Stock spread over bucket rows, one free bucket per deduction (PostgreSQL and
    /// MySQL/MariaDB; 422 on SQLite). `remaining` is an estimate while other deductions of
    /// the SKU are in flight.
    Sharded,
}

impl From<StrategyName> for Strategy {
    fn from(name: StrategyName) -> Self {
        match name {
            StrategyName::Pessimistic => Strategy::Pessimistic,
            StrategyName::NoWait => Strategy::NoWait,
            StrategyName::Optimistic => Strategy::Optimistic,
            StrategyName::Guarded => Strategy::Guarded,
            StrategyName::Coalesced => Strategy::Coalesced,
            StrategyName::Sharded => Strategy::Sharded,
        }
    }
}

/// Body of `POST /v1/skus`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSkuRequest {
    /// 1–64 characters of `A-Z a-z 0-9 . _ : -`.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "tshirt-red-m")]
    pub sku: String,
    /// Units on hand at creation, 0..=10^15.
    #[schema(minimum = 0, maximum = 1_000_000_000_000_000_i64, example = 10)]
    pub initial_stock: i64,
}

/// Body of `POST /v1/skus/{sku}/restock`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestockRequest {
    /// Units to add, 1..=10^9.
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 5)]
    pub quantity: i64,
}

/// Body of `POST /v1/skus/{sku}/deduct`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeductBody {
    /// Units to deduct, 1..=10^9.
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 1)]
    pub quantity: i64,
    /// Strategy for this request; the server default when absent. Refused (422) when the
    /// server disallows per-request overrides. Not part of the idempotent identity.
    #[serde(default)]
    pub strategy: Option<StrategyName>,
}

/// A SKU's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockResponse {
    /// The SKU.
    pub sku: String,
    /// Units on hand now.
    pub stock: i64,
    /// Units at creation; the audit reconciles the ledger against it.
    pub initial_stock: i64,
}

impl From<StockLevel> for StockResponse {
    fn from(level: StockLevel) -> Self {
        Self {
            sku: level.sku.as_str().to_owned(),
            stock: level.stock,
            initial_stock: level.initial_stock,
        }
    }
}

/// Proof of a committed deduction.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeductReceipt {
    /// The SKU.
    pub sku: String,
    /// Units deducted.
    pub quantity: i64,
    /// Stock right after this deduction committed.
    pub remaining: i64,
    /// The ledger row written by this deduction.
    pub ledger_id: i64,
    /// Attempts this call made (1 unless a conflict was retried).
    pub attempts: u32,
    /// True when the Idempotency-Key was seen before and this is the original receipt again.
    pub replayed: bool,
    /// Microseconds spent waiting for the row (lock wait, plus queue time when coalesced).
    pub lock_wait_us: u64,
    /// Strategy this call used.
    pub strategy: String,
    /// The key the ledger row carries: the request's `Idempotency-Key`, or one the server
    /// generated (also in the `Idempotency-Key` response header). Retry with it after an
    /// unknown outcome.
    pub idempotency_key: String,
}

impl DeductReceipt {
    fn new(receipt: Receipt, strategy: Strategy) -> Self {
        Self {
            sku: receipt.sku.as_str().to_owned(),
            quantity: receipt.quantity.get(),
            remaining: receipt.remaining,
            ledger_id: receipt.ledger_id,
            attempts: receipt.attempts,
            replayed: receipt.replayed,
            lock_wait_us: receipt.lock_wait_us,
            strategy: strategy.as_str().to_owned(),
            idempotency_key: receipt.idempotency_key.as_str().to_owned(),
        }
    }
}

/// Proof of a committed restock.
#[derive(Debug, Serialize, ToSchema)]
pub struct RestockResponse {
    /// The SKU.
    pub sku: String,
    /// Units added.
    pub quantity: i64,
    /// Stock right after the restock.
    pub stock_after: i64,
    /// The ledger row written.
    pub ledger_id: i64,
    /// True when the Idempotency-Key was seen before and this is the original receipt again.
    pub replayed: bool,
    /// The key the ledger row carries (the request's, or one the server generated).
    pub idempotency_key: String,
}

impl From<RestockReceipt> for RestockResponse {
    fn from(receipt: RestockReceipt) -> Self {
        Self {
            sku: receipt.sku.as_str().to_owned(),
            quantity: receipt.quantity.get(),
            stock_after: receipt.stock_after,
            ledger_id: receipt.ledger_id,
            replayed: receipt.replayed,
            idempotency_key: receipt.idempotency_key.as_str().to_owned(),
        }
    }
}

/// The request's `Idempotency-Key`, parsed, if it sent one.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, ApiError> {
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
fn keyed_response(body: impl Serialize, key: &IdempotencyKey, replayed: bool) -> Response {
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

/// One ledger row.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    /// Monotonic id; pass the last one as `after_id` for the next page.
    pub id: i64,
    /// The SKU.
    pub sku: String,
    /// Signed change: negative for deductions, positive for restocks.
    pub delta: i64,
    /// Stock right after this change.
    pub stock_after: i64,
    /// `deduct` or `restock`.
    pub reason: String,
    /// Idempotency key of the request that wrote the row, if any.
    pub idempotency_key: Option<String>,
    /// Commit timestamp.
    pub created_at: DateTime<Utc>,
}

impl From<LedgerEntry> for LedgerRow {
    fn from(entry: LedgerEntry) -> Self {
        Self {
            id: entry.id,
            sku: entry.sku.as_str().to_owned(),
            delta: entry.delta,
            stock_after: entry.stock_after,
            reason: entry.reason.as_str().to_owned(),
            idempotency_key: entry.idempotency_key,
            created_at: entry.created_at,
        }
    }
}

/// A page of a SKU's ledger, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerPageResponse {
    /// The rows.
    pub entries: Vec<LedgerRow>,
    /// Pass as `after_id` to read the next page; null when this page was the last.
    pub next_after_id: Option<i64>,
}

/// Query of `GET /v1/skus/{sku}/ledger`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LedgerQuery {
    /// Return rows with an id greater than this one.
    pub after_id: Option<i64>,
    /// Rows per page, 1..=1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// One SKU whose figures do not reconcile.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditDiscrepancy {
    /// The SKU.
    pub sku: String,
    /// Stock at creation.
    pub initial_stock: i64,
    /// Stock now.
    pub stock: i64,
    /// Σ ledger deltas.
    pub ledger_delta_sum: i64,
    /// Ledger rows.
    pub ledger_rows: i64,
    /// Stock below zero.
    pub negative_stock: bool,
    /// `initial + Σ deltas − stock`.
    pub ledger_gap: i64,
}

/// Result of reconciling every SKU.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    /// True when every SKU reconciles.
    pub clean: bool,
    /// SKUs checked.
    pub skus_checked: u64,
    /// Ledger rows summed.
    pub ledger_rows: u64,
    /// SKUs that broke an invariant.
    pub discrepancies: Vec<AuditDiscrepancy>,
}

impl From<AuditReport> for AuditResponse {
    fn from(report: AuditReport) -> Self {
        Self {
            clean: report.is_clean(),
            skus_checked: report.skus_checked,
            ledger_rows: report.ledger_rows,
            discrepancies: report
                .discrepancies
                .into_iter()
                .map(|d| AuditDiscrepancy {
                    sku: d.snapshot.sku.as_str().to_owned(),
                    initial_stock: d.snapshot.initial_stock,
                    stock: d.snapshot.stock,
                    ledger_delta_sum: d.snapshot.ledger_delta_sum,
                    ledger_rows: d.snapshot.ledger_rows,
                    negative_stock: d.negative_stock,
                    ledger_gap: d.ledger_gap,
                })
                .collect(),
        }
    }
}

/// Liveness / readiness answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct HealthResponse {
    /// `ok` or `ready`.
    pub status: String,
    /// The database backend (readiness only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend: Option<String>,
}

// ---------------------------------------------------------------------------------------
// Extractors
// ---------------------------------------------------------------------------------------

/// Passes when no token is configured or the request carries `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.policy.auth_token.as_deref() else {
            return Ok(Self);
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .unwrap_or("");
        // Constant time in the token's content, so the comparison does not reveal how many
        // leading bytes matched. (A length mismatch fails early; the length is not secret.)
        if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// A JSON body whose every failure is a problem document: 415 without a JSON content type,
/// 413 over the body limit, 422 for malformed JSON or wrong fields/types.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let is_json = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
                mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
            })
            .unwrap_or(false);
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "Unsupported media type",
                "the request body must be JSON with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(request, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::payload_too_large(state.policy.body_limit_bytes)
            } else {
                ApiError::invalid_input(format!("could not read the request body: {rejection}"))
            }
        })?;
        serde_json::from_slice(&bytes)
            .map(JsonBody)
            .map_err(|e| ApiError::invalid_input(format!("invalid JSON body: {e}")))
    }
}

fn sku_from_path(path: Result<Path<String>, PathRejection>) -> Result<SkuId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::invalid_input(format!("invalid path: {e}")))?;
    SkuId::parse(raw).map_err(|e| ApiError::invalid_input(e.to_string()))
}

// ---------------------------------------------------------------------------------------
// Handlers
// ---------------------------------------------------------------------------------------

/// Create a SKU with its initial stock.
#[utoipa::path(
    post, path = "/v1/skus", tag = "inventory",
    request_body = CreateSkuRequest,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created", body = StockResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "already_exists", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn create_sku(
    State(state): State<AppState>,
    _auth: Authorized,
    JsonBody(body): JsonBody<CreateSkuRequest>,
) -> Result<(StatusCode, Json<StockResponse>), ApiError> {
    let sku = SkuId::parse(body.sku).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    let level = state.store.create_sku(&sku, body.initial_stock).await?;
    Ok((StatusCode::CREATED, Json(level.into())))
}

/// Current stock of one SKU.
#[utoipa::path(
    get, path = "/v1/skus/{sku}", tag = "inventory",
    params(("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$")),
    responses(
        (status = 200, description = "Stock", body = StockResponse),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn get_stock(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<StockResponse>, ApiError> {
    let sku = sku_from_path(path)?;
    Ok(Json(state.store.stock(&sku).await?.into()))
}

/// Add units (writes one ledger row).
#[utoipa::path(
    post, path = "/v1/skus/{sku}/restock", tag = "inventory",
    params(("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$")),
    request_body = RestockRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Restocked", body = RestockResponse),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input (including a restock past the stock maximum)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn restock(
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
    let receipt = state.store.restock(request).await?;
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
    ),
    request_body = DeductBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Deducted (or replayed)", body = DeductReceipt),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "insufficient_stock (with `available`) or conflict (retries exhausted)", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input or idempotency_key_reused", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn deduct(
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
    let mut request = DeductRequest::new(sku, quantity, strategy);
    if let Some(key) = idempotency_key(&headers)? {
        request = request.with_idempotency_key(key);
    }
    match state.store.deduct(request).await {
        Ok(receipt) => {
            let outcome = if receipt.replayed { "replayed" } else { "ok" };
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
            state.metrics.record_deduction(strategy, error.kind());
            Err(error.into())
        }
    }
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
async fn ledger(
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
#[utoipa::path(
    get, path = "/v1/audit", tag = "inventory",
    responses(
        (status = 200, description = "Audit report (check `clean`)", body = AuditResponse),
        (status = 503, description = "unavailable, overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
async fn audit(State(state): State<AppState>) -> Result<Json<AuditResponse>, ApiError> {
    Ok(Json(state.store.audit().await?.into()))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Alive", body = HealthResponse)))]
async fn healthz() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".to_owned(),
        backend: None,
    })
}

/// Readiness: the database answers a trivial query within 2 s.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = HealthResponse),
        (status = 503, description = "Database unreachable", body = ProblemDetails, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<Json<HealthResponse>, ApiError> {
    let not_ready = |detail: &str| {
        ApiError::unavailable(
            "not_ready",
            "Not ready",
            format!("the database is not reachable: {detail}"),
            Duration::from_secs(1),
        )
    };
    match tokio::time::timeout(READINESS_TIMEOUT, state.store.ping()).await {
        Ok(Ok(())) => Ok(Json(HealthResponse {
            status: "ready".to_owned(),
            backend: Some(state.store.backend().to_owned()),
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
async fn metrics_text(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(&state.store);
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        text,
    )
        .into_response()
}

async fn openapi_json() -> Response {
    (
        [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        openapi_pretty_json(),
    )
        .into_response()
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

/// Records latency per method, route template and status.
async fn record_latency(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Clones without allocating (a standard method is inline, a matched path is an `Arc`):
    // this runs on every request.
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    state.metrics.record_request(
        method.as_str(),
        route.as_ref().map_or("unmatched", MatchedPath::as_str),
        response.status().as_u16(),
        started.elapsed(),
    );
    response
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
        .route("/v1/skus", post(create_sku))
        .route("/v1/skus/{sku}", get(get_stock))
        .route("/v1/skus/{sku}/restock", post(restock))
        .route("/v1/skus/{sku}/deduct", post(deduct))
        .route("/v1/skus/{sku}/ledger", get(ledger))
        .route("/v1/audit", get(audit))
        .layer(limits)
        .layer(DefaultBodyLimit::max(settings.body_limit_bytes));
    Router::new()
        .merge(v1)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi_json))
        .merge(Scalar::with_url("/docs", ApiDoc::openapi()))
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), record_latency))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document, generated from the handlers above.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "stockguard",
        description = "Oversell-proof inventory deduction. Errors are application/problem+json (RFC 9457) with a stable `type` of the form urn:stockguard:problem:<kind>. Mutations need `Authorization: Bearer <token>` when the server has a token configured.",
    ),
    paths(create_sku, get_stock, restock, deduct, ledger, audit, healthz, readyz, metrics_text),
    components(schemas(ProblemDetails, StrategyName)),
    modifiers(&BearerAuth),
    tags(
        (name = "inventory", description = "Stock, deductions and the ledger"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The spec as checked into `docs/openapi.json` (pretty JSON, trailing newline).
pub fn openapi_pretty_json() -> String {
    let mut text = ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    text.push('\n');
    text
}
