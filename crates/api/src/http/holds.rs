//! Holds: `POST /v1/holds`, `GET /v1/holds/{hold_id}`, and `POST /v1/holds/{hold_id}/confirm`
//! and `/release`. The hold id is the idempotency key of all three changes; see
//! [`stockguard_core::InventoryStore::reserve`].

use super::through_gate;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use stockguard_core::{
    ConfirmLines, HOLD_TTL_MAX_S, HOLD_TTL_MIN_S, HoldId, HoldReceipt, HoldRequest, HoldState, InventoryStore,
};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Authorized, JsonBody, OptionalJsonBody};
use super::handlers::keyed_response;
use super::orders::{OrderLineBody, parse_lines};
use crate::problem::{ApiError, ProblemDetails};

/// Body of `POST /v1/holds`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HoldBody {
    /// The hold's id, which is its idempotency key: 1–128 printable ASCII characters without
    /// spaces (a checkout session's id, say).
    #[schema(example = "checkout-7f3a")]
    pub hold_id: String,
    /// 1..=100 lines. Lines with the same SKU are summed.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<OrderLineBody>,
    /// Seconds until the hold expires, counted on the database's clock: 1..=604800 (7 days).
    #[schema(minimum = 1, maximum = 604_800, example = 900)]
    pub ttl_s: u32,
    /// How the units are taken, as for an order; `guarded` when absent.
    #[serde(default)]
    pub strategy: Option<HoldStrategyName>,
}

/// How a hold takes its units: an order strategy, less `coalesced` (orders only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldStrategyName {
    /// Lock every line's row in SKU order, check them all, write, commit.
    Locked,
    /// Conditional decrements in SKU order; a short line runs the hold once locked.
    Guarded,
}

impl From<HoldStrategyName> for stockguard_core::OrderStrategy {
    fn from(name: HoldStrategyName) -> Self {
        match name {
            HoldStrategyName::Locked => Self::Locked,
            HoldStrategyName::Guarded => Self::Guarded,
        }
    }
}

/// Body of `POST /v1/holds/{hold_id}/confirm`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmBody {
    /// The units to sell, per SKU (each at most what the hold has of it); a held SKU not
    /// named goes back to stock in full. Absent: every held unit is sold.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Option<Vec<OrderLineBody>>,
}

/// A hold's state.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HoldStateName {
    /// Holding its units until `expires_at`.
    Active,
    /// Sold (the confirmed units; any rest went back to stock).
    Confirmed,
    /// Released: every unit back in stock.
    Released,
    /// Past `expires_at`: every unit back in stock (reported so at once, before the sweeper
    /// writes the expiry).
    Expired,
}

impl From<HoldState> for HoldStateName {
    fn from(state: HoldState) -> Self {
        match state {
            HoldState::Active => HoldStateName::Active,
            HoldState::Confirmed => HoldStateName::Confirmed,
            HoldState::Released => HoldStateName::Released,
            HoldState::Expired => HoldStateName::Expired,
        }
    }
}

/// One line of a hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldLineBody {
    /// The SKU.
    pub sku: String,
    /// Units held.
    pub quantity: i64,
    /// Units sold by the confirm (0 unless confirmed).
    pub confirmed: i64,
    /// Units given back to stock (release, expiry, or the rest of a partial confirm).
    pub returned: i64,
    /// The SKU's available stock right after this hold's last write on it.
    pub available: i64,
}

/// A hold as it stands.
#[derive(Debug, Serialize, ToSchema)]
pub struct HoldReceiptBody {
    /// The hold's id.
    pub hold_id: String,
    /// Its state.
    pub state: HoldStateName,
    /// When it expires (or expired), RFC 3339, on the database's clock.
    pub expires_at: String,
    /// One line per SKU, in SKU order.
    pub lines: Vec<HoldLineBody>,
    /// True when this answer replays a change made before under this hold id.
    pub replayed: bool,
    /// Attempts this call made (1 unless retried).
    pub attempts: u32,
}

impl From<HoldReceipt> for HoldReceiptBody {
    fn from(receipt: HoldReceipt) -> Self {
        Self {
            hold_id: receipt.hold_id.as_str().to_owned(),
            state: receipt.state.into(),
            expires_at: receipt.expires_at.to_rfc3339(),
            lines: receipt
                .lines
                .into_iter()
                .map(|line| HoldLineBody {
                    sku: line.sku.as_str().to_owned(),
                    quantity: line.quantity,
                    confirmed: line.confirmed,
                    returned: line.returned,
                    available: line.available,
                })
                .collect(),
            replayed: receipt.replayed,
            attempts: receipt.attempts,
        }
    }
}

fn invalid(error: stockguard_core::InvalidInput) -> ApiError {
    ApiError::invalid_input(error.to_string())
}

fn hold_from_path(path: Result<Path<String>, PathRejection>) -> Result<HoldId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::invalid_input(format!("invalid path: {e}")))?;
    HoldId::parse(raw).map_err(invalid)
}

/// The answer to a hold change: the hold, keyed by its id, or the error (counted).
fn answer(
    state: &AppState,
    operation: &'static str,
    hold_id: &HoldId,
    result: Result<HoldReceipt, stockguard_core::DeductError>,
) -> Result<Response, ApiError> {
    match result {
        Ok(receipt) => {
            let outcome = if receipt.replayed { "replayed" } else { "ok" };
            state.metrics.record_hold(operation, outcome);
            let replayed = receipt.replayed;
            Ok(keyed_response(
                HoldReceiptBody::from(receipt),
                &hold_id.idempotency_key(),
                replayed,
            ))
        }
        Err(error) => {
            state.metrics.record_hold(operation, error.kind());
            Err(error.into())
        }
    }
}

/// Hold units while the customer pays: every line's units leave available stock, or none do.
///
/// The units count against every other change at once. The hold expires `ttl_s` seconds
/// after it commits (the database's clock), and from that moment its units read as available
/// again. The `hold_id` is the idempotency key: again with the same lines answers the hold as
/// it stands (`replayed: true`); with other lines it is 409 `hold_mismatch`.
#[utoipa::path(
    post, path = "/v1/holds", tag = "holds",
    request_body = HoldBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Held (or replayed)", body = HoldReceiptBody),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found: `skus` names every unknown SKU; nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "insufficient_stock (`lines` names every short line with `available`), hold_mismatch (`mismatches`) or conflict; nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input: a bad hold id, SKU, quantity or ttl_s, or not 1 to 100 lines", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (send it again with the same hold_id), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn reserve(
    State(state): State<AppState>,
    _auth: Authorized,
    JsonBody(body): JsonBody<HoldBody>,
) -> Result<Response, ApiError> {
    let hold_id = HoldId::parse(body.hold_id).map_err(invalid)?;
    if !(HOLD_TTL_MIN_S..=HOLD_TTL_MAX_S).contains(&body.ttl_s) {
        return Err(invalid(stockguard_core::InvalidInput::HoldTtl {
            given: body.ttl_s,
            min: HOLD_TTL_MIN_S,
            max: HOLD_TTL_MAX_S,
        }));
    }
    let lines = parse_lines(body.lines)?;
    let strategy = body.strategy.unwrap_or(HoldStrategyName::Guarded);
    let hold = HoldRequest::new(hold_id.clone(), lines, body.ttl_s, strategy.into()).map_err(invalid)?;
    let result = through_gate!(state, store => store.reserve(hold).await);
    answer(&state, "reserve", &hold_id, result)
}

/// A hold as it stands. An active hold past `expires_at` reads as `expired` at once.
#[utoipa::path(
    get, path = "/v1/holds/{hold_id}", tag = "holds",
    params(("hold_id" = String, Path, description = "Hold id")),
    responses(
        (status = 200, description = "The hold", body = HoldReceiptBody),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input: a bad hold id", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "unavailable", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn get_hold(
    State(state): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let hold_id = hold_from_path(path)?;
    let receipt = state.store.hold(&hold_id).await?;
    Ok(axum::Json(HoldReceiptBody::from(receipt)).into_response())
}

/// Confirm a hold: its units are sold, all of them or the ones named (the rest go back).
///
/// The body may be left out (every unit is sold).
///
/// Once: again with the same units replays (`replayed: true`); 409 `hold_expired` past its
/// expiry, 409 `hold_resolved` (with `state`) when it was released or confirmed with other
/// units. Nothing changes on any refusal.
#[utoipa::path(
    post, path = "/v1/holds/{hold_id}/confirm", tag = "holds",
    params(("hold_id" = String, Path, description = "Hold id")),
    request_body(content = Option<ConfirmBody>, description = "Optional: leave it out to sell every unit"),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Confirmed (or replayed)", body = HoldReceiptBody),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "hold_expired (`expires_at`) or hold_resolved (`state`); nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "A body that is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input: a bad hold id, or a line the hold does not have, or more units than it holds", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (confirm it again), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn confirm(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
    OptionalJsonBody(body): OptionalJsonBody<ConfirmBody>,
) -> Result<Response, ApiError> {
    let hold_id = hold_from_path(path)?;
    let lines = match body.lines {
        None => ConfirmLines::All,
        Some(lines) => ConfirmLines::partial(parse_lines(lines)?).map_err(invalid)?,
    };
    let result = through_gate!(state, store => store.confirm_hold(&hold_id, lines).await);
    answer(&state, "confirm", &hold_id, result)
}

/// Release a hold: every unit goes back to stock.
///
/// Once: again replays; 409 `hold_expired` past its expiry (its units are already back),
/// 409 `hold_resolved` when it was confirmed.
#[utoipa::path(
    post, path = "/v1/holds/{hold_id}/release", tag = "holds",
    params(("hold_id" = String, Path, description = "Hold id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Released (or replayed)", body = HoldReceiptBody),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "hold_expired or hold_resolved; nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input: a bad hold id", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (release it again), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn release(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let hold_id = hold_from_path(path)?;
    let result = through_gate!(state, store => store.release_hold(&hold_id).await);
    answer(&state, "release", &hold_id, result)
}
