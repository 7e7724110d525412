//! The store trait every adapter implements.

use std::future::Future;

use crate::domain::{
    AdjustReceipt, AdjustRequest, AuditReport, Capabilities, ConfirmLines, DeductRequest, HoldId,
    HoldReceipt, HoldRequest, IdempotencyKey, IncrementalAuditReport, LedgerEntry, LedgerPage, OrderReceipt,
    OrderRequest, PoolStatus, Receipt, RestockReceipt, RestockRequest, SkuId, SkuSnapshot, StockLevel,
};
use crate::error::DeductError;

/// A durable inventory with a ledger.
///
/// Contract, for every implementation and every strategy:
/// - stock never goes below zero;
/// - every stock change writes exactly one ledger row in the same transaction, so
///   `initial_stock + Σ ledger deltas = stock` for every SKU at every commit;
/// - a refused request changes nothing;
/// - a deduction carrying an idempotency key that was already used for the same SKU and
///   quantity returns the first receipt (with `replayed = true`) and changes nothing, even
///   when both calls race; used for anything else it fails with `IdempotencyKeyReused`;
/// - every change carries a key: the client's, or one generated for it and returned in the
///   receipt.
///
/// The outcome contract: every answer to a change is exactly one of
/// - **committed**: `Ok(receipt)`; the change committed exactly once;
/// - **definitely not applied**: any `Err` but `OutcomeUnknown` (see
///   [`DeductError::nothing_changed`]);
/// - **outcome unknown**: [`DeductError::OutcomeUnknown`], only when the connection was lost
///   (or the deadline passed) after a COMMIT or an autocommit write was sent and the key
///   could not be looked up in time. A retry with the same key replays or applies exactly
///   once.
///
/// Methods return `impl Future + Send` rather than using `async_trait`, so the trait is
/// used generically (the api holds its store as a type parameter), never as `dyn`.
pub trait InventoryStore: Send + Sync + 'static {
    /// A short name for the backend: `postgres`, `mariadb`, `mysql`, `sqlite`.
    fn backend(&self) -> &'static str;

    /// What this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// Creates a SKU with `initial_stock` units (0..=`STOCK_MAX`). Creation writes no ledger
    /// row: the audit reconciles against `initial_stock`.
    fn create_sku(
        &self,
        sku: &SkuId,
        initial_stock: i64,
    ) -> impl Future<Output = Result<StockLevel, DeductError>> + Send;

    /// Adds `request.quantity` units and writes one ledger row with a positive delta. A
    /// repeated key replays the first receipt, as for deductions.
    fn restock(
        &self,
        request: RestockRequest,
    ) -> impl Future<Output = Result<RestockReceipt, DeductError>> + Send;

    /// Deducts `request.quantity` using `request.strategy`.
    fn deduct(&self, request: DeductRequest) -> impl Future<Output = Result<Receipt, DeductError>> + Send;

    /// Applies every line of `order` or none, in one transaction. Lines with the same SKU
    /// were summed when the order was parsed. The order id is the idempotency key: a replay
    /// returns the first receipt (`replayed = true`); the same id with other lines is
    /// `OrderMismatch`. A refusal names every short line (`OrderShort`) or every unknown SKU
    /// (`SkusNotFound`). Each line writes one ledger row (reason `order`, reference the
    /// order id). The outcome contract holds as for `deduct`, resolved by the order id.
    fn place_order(
        &self,
        order: OrderRequest,
    ) -> impl Future<Output = Result<OrderReceipt, DeductError>> + Send;

    /// Places a hold: all lines' units move from available stock into `reserved`, or none
    /// do, until it is confirmed, released, or expires `ttl_s` seconds after it committed (the
    /// database's clock). The hold id is its idempotency key: a replay answers with the hold
    /// as it stands; the same id with other lines is `HoldMismatch`.
    fn reserve(&self, hold: HoldRequest) -> impl Future<Output = Result<HoldReceipt, DeductError>> + Send;

    /// The hold as it stands; an active hold past its expiry reads as expired.
    fn hold(&self, hold_id: &HoldId) -> impl Future<Output = Result<HoldReceipt, DeductError>> + Send;

    /// Confirms an active hold: `lines` units are sold, any rest goes back to stock. Again with
    /// the same lines replays; `HoldExpired` past its expiry; `HoldResolved` when it was
    /// released, or confirmed with other units.
    fn confirm_hold(
        &self,
        hold_id: &HoldId,
        lines: ConfirmLines,
    ) -> impl Future<Output = Result<HoldReceipt, DeductError>> + Send;

    /// Releases an active hold: every unit goes back to stock. Again replays; `HoldExpired`
    /// past its expiry; `HoldResolved` when it was confirmed.
    fn release_hold(&self, hold_id: &HoldId)
    -> impl Future<Output = Result<HoldReceipt, DeductError>> + Send;

    /// Expires up to `batch` due holds in one transaction (1..=`HOLD_SWEEP_BATCH_MAX`);
    /// returns how many.
    fn sweep_holds(&self, batch: u32) -> impl Future<Output = Result<usize, DeductError>> + Send;

    /// Adjusts stock by hand (a return, damage, a recount, a restock): one ledger row with
    /// reason `adjust`, the kind and the reference. Never below zero (`InsufficientStock`),
    /// never past `STOCK_MAX`. Keyed and replayed like a restock.
    fn adjust(
        &self,
        request: AdjustRequest,
    ) -> impl Future<Output = Result<AdjustReceipt, DeductError>> + Send;

    /// Current stock of one SKU.
    fn stock(&self, sku: &SkuId) -> impl Future<Output = Result<StockLevel, DeductError>> + Send;

    /// A page of one SKU's ledger, oldest first. An unknown SKU is `NotFound`.
    fn ledger(
        &self,
        sku: &SkuId,
        page: LedgerPage,
    ) -> impl Future<Output = Result<Vec<LedgerEntry>, DeductError>> + Send;

    /// Which of `keys` name a committed change: a deduction's or restock's idempotency key, or
    /// an order id. A key absent from the answer had not committed when the database was read
    /// (a call still running may commit later). Resolves records kept outside the database,
    /// such as an admission gate's in-flight records. At most [`COMMITTED_KEYS_MAX`] keys.
    ///
    /// [`COMMITTED_KEYS_MAX`]: crate::COMMITTED_KEYS_MAX
    fn committed_keys(
        &self,
        keys: &[IdempotencyKey],
    ) -> impl Future<Output = Result<Vec<IdempotencyKey>, DeductError>> + Send;

    /// The per-SKU figures the audit reconciles, computed inside the database in one query.
    fn snapshot(&self) -> impl Future<Output = Result<Vec<SkuSnapshot>, DeductError>> + Send;

    /// Reconciles every SKU: stock ≥ 0 and `initial + Σ ledger deltas = stock`.
    fn audit(&self) -> impl Future<Output = Result<AuditReport, DeductError>> + Send {
        async move { Ok(AuditReport::from_snapshots(&self.snapshot().await?)) }
    }

    /// Reconciles every SKU through the checkpoint the last incremental audit stored, reading
    /// only the ledger rows after it, then advances the checkpoint of every SKU that
    /// reconciled. Checks stock ≥ 0 and `initial + Σ ledger deltas = stock`; orders and holds
    /// are [`audit`](Self::audit)'s. A store without checkpoints reads every row.
    fn audit_incremental(&self) -> impl Future<Output = Result<IncrementalAuditReport, DeductError>> + Send {
        async move {
            let full = AuditReport::from_snapshots(&self.snapshot().await?);
            Ok(IncrementalAuditReport {
                skus_checked: full.skus_checked,
                ledger_rows_verified: full.ledger_rows,
                discrepancies: full.discrepancies,
                ..IncrementalAuditReport::default()
            })
        }
    }

    /// Succeeds when the database answers a trivial query.
    fn ping(&self) -> impl Future<Output = Result<(), DeductError>> + Send;

    /// Pool occupancy.
    fn pool_status(&self) -> PoolStatus;

    /// Stops accepting coalesced work, flushes queued batches and closes the pool.
    fn close(&self) -> impl Future<Output = ()> + Send;
}
