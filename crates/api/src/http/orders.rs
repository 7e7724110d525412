//! `POST /v1/orders`: a multi-line order, all lines or none. The order id is its idempotency
//! key; see [`stockguard_core::InventoryStore::place_order`].

use super::through_gate;
use axum::extract::State;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use stockguard_core::{
    InventoryStore, ORDER_LINES_MAX, OrderId, OrderLine, OrderReceipt, OrderRequest, OrderStrategy, Quantity,
    SkuId,
};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Authorized, JsonBody};
use super::handlers::keyed_response;
use crate::problem::{ApiError, ProblemDetails};

/// An order strategy, as accepted in requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OrderStrategyName {
    /// One transaction: lock every line's row in SKU order, check them all, write, commit.
    Locked,
    /// One transaction of conditional decrements in SKU order, no reads; a short line rolls
    /// back and the order runs once locked, which names every short line exactly.
    Guarded,
    /// Group commit for hot SKUs: concurrent orders sharing a SKU are placed in one
    /// transaction, each still placed or refused on its own against the stock the orders
    /// before it left. Orders only.
    Coalesced,
}

impl From<OrderStrategyName> for OrderStrategy {
    fn from(name: OrderStrategyName) -> Self {
        match name {
            OrderStrategyName::Locked => OrderStrategy::Locked,
            OrderStrategyName::Guarded => OrderStrategy::Guarded,
            OrderStrategyName::Coalesced => OrderStrategy::Coalesced,
        }
    }
}

/// One line of an order.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderLineBody {
    /// 1–64 characters of `A-Z a-z 0-9 . _ : -`.
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$", example = "tshirt-red-m")]
    pub sku: String,
    /// Units, 1..=10^9. Lines with the same SKU are summed (the sum must stay within 10^9).
    #[schema(minimum = 1, maximum = 1_000_000_000, example = 1)]
    pub quantity: i64,
}

/// Body of `POST /v1/orders`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OrderBody {
    /// The order's id, which is its idempotency key: 1–128 printable ASCII characters
    /// without spaces.
    #[schema(example = "order-2026-000123")]
    pub order_id: String,
    /// 1..=100 lines.
    #[schema(min_items = 1, max_items = 100)]
    pub lines: Vec<OrderLineBody>,
    /// How the order is applied; `guarded` when absent. Not part of the idempotent identity.
    #[serde(default)]
    pub strategy: Option<OrderStrategyName>,
}

/// One applied line.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderLineReceiptBody {
    /// The SKU.
    pub sku: String,
    /// Units taken (the order's lines for this SKU summed).
    pub quantity: i64,
    /// The SKU's stock right after the order committed.
    pub remaining: i64,
    /// The line's ledger row (reason `order`).
    pub ledger_id: i64,
}

/// Proof of a committed order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderReceiptBody {
    /// The order's id.
    pub order_id: String,
    /// One line per SKU, in SKU order.
    pub lines: Vec<OrderLineReceiptBody>,
    /// True when the order id was placed before and this is its first receipt again.
    pub replayed: bool,
    /// Attempts this call made (1 unless retried).
    pub attempts: u32,
    /// The strategy this call used.
    pub strategy: OrderStrategyName,
}

impl OrderReceiptBody {
    fn new(receipt: OrderReceipt, strategy: OrderStrategyName) -> Self {
        Self {
            order_id: receipt.order_id.as_str().to_owned(),
            lines: receipt
                .lines
                .into_iter()
                .map(|line| OrderLineReceiptBody {
                    sku: line.sku.as_str().to_owned(),
                    quantity: line.quantity,
                    remaining: line.remaining,
                    ledger_id: line.ledger_id,
                })
                .collect(),
            replayed: receipt.replayed,
            attempts: receipt.attempts,
            strategy,
        }
    }
}

/// The order as core takes it, or a 422 naming the first bad field.
fn parse(body: OrderBody) -> Result<(OrderRequest, OrderStrategyName), ApiError> {
    let invalid = |e: stockguard_core::InvalidInput| ApiError::invalid_input(e.to_string());
    let order_id = OrderId::parse(body.order_id).map_err(invalid)?;
    let lines = parse_lines(body.lines)?;
    let strategy = body.strategy.unwrap_or(OrderStrategyName::Guarded);
    let order = OrderRequest::new(order_id, lines, strategy.into()).map_err(invalid)?;
    Ok((order, strategy))
}

/// An order's or a hold's lines as core takes them, or a 422 naming the first bad line.
pub(crate) fn parse_lines(lines: Vec<OrderLineBody>) -> Result<Vec<OrderLine>, ApiError> {
    // Before parsing each line: refuse an over-long list without walking all of it (core
    // checks the same limit for callers that skip this edge).
    if lines.len() > ORDER_LINES_MAX {
        return Err(ApiError::invalid_input(
            stockguard_core::InvalidInput::OrderLines {
                given: lines.len(),
                max: ORDER_LINES_MAX,
            }
            .to_string(),
        ));
    }
    lines
        .into_iter()
        .enumerate()
        .map(|(index, line)| {
            let at =
                |e: stockguard_core::InvalidInput| ApiError::invalid_input(format!("lines[{index}]: {e}"));
            Ok(OrderLine {
                sku: SkuId::parse(line.sku).map_err(at)?,
                quantity: Quantity::new(line.quantity).map_err(at)?,
            })
        })
        .collect()
}

/// Place a multi-line order: every line applies, or none does.
///
/// Lines with the same SKU are summed before the check. The `order_id` is the idempotency
/// key: placing it again with the same lines returns the first receipt (`replayed: true`,
/// header `Idempotent-Replayed: true`); with other lines it is 409 `order_mismatch`, naming
/// the lines that differ. A refusal names every short line with its available units.
#[utoipa::path(
    post, path = "/v1/orders", tag = "orders",
    request_body = OrderBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Placed (or replayed)", body = OrderReceiptBody),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found: `skus` names every unknown SKU; nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "insufficient_stock (`lines` names every short line with `available`), order_mismatch (`mismatches`) or conflict (retries exhausted); nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input: a bad order id, SKU or quantity, or not 1 to 100 lines", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (place it again with the same order_id), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn place_order(
    State(state): State<AppState>,
    _auth: Authorized,
    JsonBody(body): JsonBody<OrderBody>,
) -> Result<Response, ApiError> {
    let (order, strategy) = parse(body)?;
    let key = order.order_id().idempotency_key();
    match through_gate!(state, store => store.place_order(order).await) {
        Ok(receipt) => {
            let outcome = if receipt.replayed { "replayed" } else { "ok" };
            state.metrics.record_order(strategy.into(), outcome);
            let replayed = receipt.replayed;
            Ok(keyed_response(
                OrderReceiptBody::new(receipt, strategy),
                &key,
                replayed,
            ))
        }
        Err(error) => {
            state.metrics.record_order(strategy.into(), error.kind());
            Err(error.into())
        }
    }
}
