//! `POST /v1/skus/{sku}/adjustments`: stock adjusted by hand, with a kind and a reference.

use super::through_gate;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use stockguard_core::{AdjustReceipt, AdjustRequest, AdjustmentKind, InventoryStore};
use utoipa::ToSchema;

use super::AppState;
use super::extract::{Authorized, JsonBody, sku_from_path};
use super::handlers::{idempotency_key, keyed_response};
use crate::problem::{ApiError, ProblemDetails};

/// Why stock is adjusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKindName {
    /// A customer returned units: adds.
    Return,
    /// Units damaged or lost: removes.
    Damage,
    /// A stock count: adds or removes.
    Recount,
    /// Units arrived outside the restock endpoint: adds.
    Restock,
}

impl From<AdjustmentKindName> for AdjustmentKind {
    fn from(name: AdjustmentKindName) -> Self {
        match name {
            AdjustmentKindName::Return => AdjustmentKind::Return,
            AdjustmentKindName::Damage => AdjustmentKind::Damage,
            AdjustmentKindName::Recount => AdjustmentKind::Recount,
            AdjustmentKindName::Restock => AdjustmentKind::Restock,
        }
    }
}

impl From<AdjustmentKind> for AdjustmentKindName {
    fn from(kind: AdjustmentKind) -> Self {
        match kind {
            AdjustmentKind::Return => AdjustmentKindName::Return,
            AdjustmentKind::Damage => AdjustmentKindName::Damage,
            AdjustmentKind::Recount => AdjustmentKindName::Recount,
            AdjustmentKind::Restock => AdjustmentKindName::Restock,
        }
    }
}

/// Body of `POST /v1/skus/{sku}/adjustments`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    /// Units to add (positive) or remove (negative), 1..=10^9 either way; the sign must fit
    /// the reason.
    #[schema(minimum = -1_000_000_000, maximum = 1_000_000_000, example = 2)]
    pub quantity: i64,
    /// Why.
    pub reason: AdjustmentKindName,
    /// Your reference (an RMA number, a count sheet): 1–128 printable ASCII characters.
    #[serde(default)]
    #[schema(example = "RMA-2026-0042")]
    pub reference: Option<String>,
}

/// Proof of a committed adjustment.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdjustmentReceipt {
    /// The SKU.
    pub sku: String,
    /// Units added or removed.
    pub quantity: i64,
    /// Stock right after it.
    pub stock_after: i64,
    /// Its ledger row (reason `adjust`).
    pub ledger_id: i64,
    /// Why.
    pub reason: AdjustmentKindName,
    /// Your reference.
    pub reference: Option<String>,
    /// True when the Idempotency-Key was seen before and this is the original receipt again.
    pub replayed: bool,
    /// The key the ledger row carries (yours, or one the server generated).
    pub idempotency_key: String,
}

impl From<AdjustReceipt> for AdjustmentReceipt {
    fn from(receipt: AdjustReceipt) -> Self {
        Self {
            sku: receipt.sku.as_str().to_owned(),
            quantity: receipt.delta,
            stock_after: receipt.stock_after,
            ledger_id: receipt.ledger_id,
            reason: receipt.kind.into(),
            reference: receipt.reference,
            replayed: receipt.replayed,
            idempotency_key: receipt.idempotency_key.as_str().to_owned(),
        }
    }
}

/// Adjust stock by hand: a return, damage, a recount, a restock. Never below zero.
///
/// Writes one ledger row with reason `adjust`, the kind and the reference. With an
/// `Idempotency-Key`, a repeat returns the first receipt; the same key for another change is
/// 422 `idempotency_key_reused`.
#[utoipa::path(
    post, path = "/v1/skus/{sku}/adjustments", tag = "inventory",
    params(
        ("sku" = String, Path, description = "SKU id", pattern = r"^[A-Za-z0-9._:-]{1,64}$"),
        ("Idempotency-Key" = Option<String>, Header, description = "1–128 printable ASCII characters without spaces"),
    ),
    request_body = AdjustmentBody,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Adjusted (or replayed)", body = AdjustmentReceipt),
        (status = 400, description = "bad_request: the body ended before its Content-Length", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 401, description = "Missing or wrong bearer token", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 404, description = "not_found", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 409, description = "insufficient_stock: removing more than is on hand (with `available`); nothing changed", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 413, description = "Body too large", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 415, description = "Body is not JSON", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 422, description = "invalid_input (a zero or out-of-range quantity, a sign that does not fit the reason, a bad reference, a total past the stock maximum) or idempotency_key_reused", body = ProblemDetails, content_type = "application/problem+json"),
        (status = 503, description = "lock_timeout, unavailable, outcome_unknown (retry with the key), overloaded or request_timeout; see Retry-After", body = ProblemDetails, content_type = "application/problem+json"),
    )
)]
pub(crate) async fn adjust(
    State(state): State<AppState>,
    _auth: Authorized,
    path: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    JsonBody(body): JsonBody<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let sku = sku_from_path(path)?;
    let mut request = AdjustRequest::new(sku, body.quantity, body.reason.into(), body.reference)
        .map_err(|e| ApiError::invalid_input(e.to_string()))?;
    if let Some(key) = idempotency_key(&headers)? {
        request = request.with_idempotency_key(key);
    }
    let receipt = through_gate!(state, store => store.adjust(request).await)?;
    let (key, replayed) = (receipt.idempotency_key.clone(), receipt.replayed);
    Ok(keyed_response(AdjustmentReceipt::from(receipt), &key, replayed))
}
