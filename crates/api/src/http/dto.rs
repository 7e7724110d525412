//! Request and response bodies: the wire contract, with the OpenAPI schema of each.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use stockguard_core::{AuditReport, LedgerEntry, Receipt, RestockReceipt, StockLevel, Strategy};
use utoipa::{IntoParams, ToSchema};

/// A strategy name, as accepted in requests and on the command line (`--default-strategy`,
/// whose help lists these with their descriptions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
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
    /// Deduct only if the SKU row's `version` is still this one (from `GET /v1/skus/{sku}`,
    /// or its `ETag`); else 412 `version_mismatch`, nothing changed. Same as `If-Match`.
    #[serde(default)]
    pub expected_version: Option<i64>,
}

/// A SKU's stock.
#[derive(Debug, Serialize, ToSchema)]
pub struct StockResponse {
    /// The SKU.
    pub sku: String,
    /// Units available to sell now: on hand less active holds. A hold past its expiry
    /// counts as available at once.
    pub stock: i64,
    /// Units set aside by active holds; on hand is `stock + reserved`.
    pub reserved: i64,
    /// Units at creation; the audit reconciles the ledger against it.
    pub initial_stock: i64,
    /// The SKU row's version (also the `ETag`): a conditional deduction names it.
    pub version: i64,
}

impl From<StockLevel> for StockResponse {
    fn from(level: StockLevel) -> Self {
        Self {
            sku: level.sku.as_str().to_owned(),
            stock: level.stock,
            reserved: level.reserved,
            initial_stock: level.initial_stock,
            version: level.version,
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
    pub(crate) fn new(receipt: Receipt, strategy: Strategy) -> Self {
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

/// One ledger row.
#[derive(Debug, Serialize, ToSchema)]
pub struct LedgerRow {
    /// Monotonic id; pass the last one as `after_id` for the next page.
    pub id: i64,
    /// The SKU.
    pub sku: String,
    /// Signed change: negative for deductions and order lines, positive for restocks, either
    /// for adjustments.
    pub delta: i64,
    /// Stock right after this change.
    pub stock_after: i64,
    /// `deduct`, `restock`, `order` or `adjust`.
    pub reason: String,
    /// Idempotency key of the request that wrote the row (an order's lines have none: the
    /// order id is in `reference`).
    pub idempotency_key: Option<String>,
    /// Commit timestamp.
    pub created_at: DateTime<Utc>,
    /// What the change belongs to: an order's id, an adjustment's reference.
    pub reference: Option<String>,
    /// An adjustment's kind: `return`, `damage`, `recount` or `restock`.
    pub adjustment: Option<String>,
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
            reference: entry.reference,
            adjustment: entry.adjustment.map(|kind| kind.as_str().to_owned()),
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
    /// Ledger rows name this SKU, but inventory has no row for it (initial stock and stock
    /// read 0).
    pub missing_sku: bool,
}

/// An order whose ledger rows are not exactly its lines.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditIncompleteOrder {
    /// The order id.
    pub order_id: String,
    /// Lines the order was placed with (0: ledger rows name an order that was never placed).
    pub line_count: i64,
    /// Its ledger rows.
    pub ledger_rows: i64,
}

/// A hold whose ledger rows do not fit its state.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditBadHold {
    /// The hold id.
    pub hold_id: String,
    /// Its stored state.
    pub state: String,
    /// What the audit found.
    pub problem: String,
}

/// A SKU whose `reserved` is not the sum of its active holds.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditReservedMismatch {
    /// The SKU.
    pub sku: String,
    /// Its `reserved`.
    pub reserved: i64,
    /// Units its active holds took.
    pub active_holds: i64,
}

/// Result of reconciling every SKU, every order and every hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct AuditResponse {
    /// True when every SKU reconciles, every order has all its lines, and every hold resolved
    /// at most once with `reserved` matching.
    pub clean: bool,
    /// SKUs checked.
    pub skus_checked: u64,
    /// Ledger rows summed.
    pub ledger_rows: u64,
    /// SKUs that broke an invariant.
    pub discrepancies: Vec<AuditDiscrepancy>,
    /// Orders checked.
    pub orders_checked: u64,
    /// Orders without exactly their lines (all lines or none).
    pub incomplete_orders: Vec<AuditIncompleteOrder>,
    /// Holds checked.
    pub holds_checked: u64,
    /// Holds resolved more than once or in part.
    pub bad_holds: Vec<AuditBadHold>,
    /// SKUs whose `reserved` is not their active holds' units.
    pub reserved_mismatches: Vec<AuditReservedMismatch>,
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
                    missing_sku: d.missing_sku,
                })
                .collect(),
            orders_checked: report.orders_checked,
            incomplete_orders: report
                .incomplete_orders
                .into_iter()
                .map(|o| AuditIncompleteOrder {
                    order_id: o.order_id,
                    line_count: o.line_count,
                    ledger_rows: o.ledger_rows,
                })
                .collect(),
            holds_checked: report.holds_checked,
            bad_holds: report
                .bad_holds
                .into_iter()
                .map(|h| AuditBadHold {
                    hold_id: h.rows.hold_id,
                    state: h.rows.state,
                    problem: h.problem.to_owned(),
                })
                .collect(),
            reserved_mismatches: report
                .reserved_mismatches
                .into_iter()
                .map(|m| AuditReservedMismatch {
                    sku: m.sku,
                    reserved: m.reserved,
                    active_holds: m.active_holds,
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
    /// The Redis admission gate: `up` or `down` (readiness only, when the service has one).
    /// Down under fail-open, the service is still ready: changes go straight to the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<String>,
}
