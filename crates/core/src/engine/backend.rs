//! The seam between the engine and a database: the primitives an adapter supplies.
//!
//! An adapter implements [`Backend`] with its SQL, its row mapping and its vendor-code mapping
//! (onto [`Fault`]), nothing more. The engine owns the flow: validation, keys, replay,
//! strategy dispatch, retries under one deadline, the sharded fallback, explaining a miss, and
//! classifying every outcome. A new strategy or operation is written once, in the engine, over
//! these primitives.
//!
//! Each primitive says whether it **may commit**. For those, a lost connection leaves the
//! outcome unknown, and the engine resolves it through [`Backend::settle_and_find`]. The others
//! (reads, and the steps of a transaction before [`Backend::commit`]) cannot commit: a fault
//! there is definite.

use std::fmt;
use std::future::Future;

use chrono::{DateTime, Utc};

use super::EngineConfig;
use super::checkpoints::AuditCheckpoints;
pub use super::fault::Step;
use super::fault::{Fault, FaultKind};
pub use super::miss_facts::{MissFacts, StoredMissFacts};
use crate::coalesce::BatchPlan;
use crate::domain::{
    Capabilities, HoldCheck, HoldId, HoldState, IdempotencyKey, LedgerEntry, LedgerPage, LedgerReason,
    LockFeature, OrderCheck, OrderId, OrphanLedger, PoolStatus, Quantity, ServerProbe, SkuId, SkuSnapshot,
    StockLevel, Strategy,
};
use crate::error::DeductError;

/// One change as the engine hands it to a primitive: parsed, and always keyed.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The SKU.
    pub sku: &'a SkuId,
    /// Units (always positive; the primitive knows the sign).
    pub quantity: Quantity,
    /// The key the ledger row carries.
    pub key: &'a IdempotencyKey,
}

/// What a write left behind: its ledger row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    /// The new ledger row's id.
    pub ledger_id: i64,
    /// The row's `stock_after`: the SKU's stock right after the change (for a SKU holding
    /// `Sharded` bucket stock, the estimate described at [`crate::Strategy::Sharded`]).
    pub stock_after: i64,
}

impl From<&LedgerEntry> for Written {
    fn from(entry: &LedgerEntry) -> Self {
        Self {
            ledger_id: entry.id,
            stock_after: entry.stock_after,
        }
    }
}

/// What a line of an order or a hold does to its SKU row: how `stock` (available) and
/// `reserved` move, and the ledger row's reason. The row's delta is the change in `stock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineReason {
    /// An order's line: `stock` − units.
    Order,
    /// A hold's line: `stock` − units, `reserved` + units.
    Reserve,
    /// A confirmed hold's line: `reserved` − units (sold). `stock` does not move, so its
    /// ledger row's delta is 0.
    Confirm,
    /// A released hold's line (or the unconfirmed rest of a partial confirm): `reserved` −
    /// units, `stock` + units.
    Release,
    /// An expired hold's line: as a release.
    Expire,
}

impl LineReason {
    /// The change in the row's `stock` (the ledger row's delta) for `units`.
    pub fn stock_delta(self, units: i64) -> i64 {
        match self {
            LineReason::Order | LineReason::Reserve => -units,
            LineReason::Confirm => 0,
            LineReason::Release | LineReason::Expire => units,
        }
    }

    /// The change in the row's `reserved` for `units`.
    pub fn reserved_delta(self, units: i64) -> i64 {
        match self {
            LineReason::Order => 0,
            LineReason::Reserve => units,
            LineReason::Confirm | LineReason::Release | LineReason::Expire => -units,
        }
    }

    /// The ledger row's reason.
    pub fn ledger_reason(self) -> LedgerReason {
        match self {
            LineReason::Order => LedgerReason::Order,
            LineReason::Reserve => LedgerReason::Reserve,
            LineReason::Confirm => LedgerReason::Confirm,
            LineReason::Release => LedgerReason::Release,
            LineReason::Expire => LedgerReason::Expire,
        }
    }
}

/// One line of an order or a hold as a primitive writes it: the SKU row moved as `reason`
/// says, and a ledger row with that reason, no idempotency key of its own, and the order's
/// or hold's id as its reference.
#[derive(Debug, Clone, Copy)]
pub struct LineWrite<'a> {
    /// The SKU.
    pub sku: &'a SkuId,
    /// Units (positive; `reason` gives the signs).
    pub quantity: i64,
    /// What the line does.
    pub reason: LineReason,
    /// The order's or hold's id, written as the row's reference.
    pub reference: &'a str,
}

impl LineWrite<'_> {
    /// The change in the row's `stock`, which is also the ledger row's delta.
    pub fn stock_delta(&self) -> i64 {
        self.reason.stock_delta(self.quantity)
    }

    /// The change in the row's `reserved`.
    pub fn reserved_delta(&self) -> i64 {
        self.reason.reserved_delta(self.quantity)
    }
}

/// One line of a coalesced batch as planned: its write, the SKU row's stock once it and
/// every earlier line of the batch on that SKU are applied, and the `stock_after` to record.
#[derive(Debug, Clone, Copy)]
pub struct PlannedLine<'a> {
    /// The line.
    pub line: LineWrite<'a>,
    /// The row's stock after this line (lines on one SKU come in batch order, so the last
    /// one's value is what the row is left with).
    pub row_stock_after: i64,
    /// The ledger row's `stock_after`.
    pub stock_after: i64,
}

/// An order id to claim, as [`Backend::claim_order`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct OrderClaim<'a> {
    /// The order id.
    pub order_id: &'a OrderId,
    /// Its canonical lines.
    pub lines: &'a str,
    /// How many lines.
    pub line_count: usize,
}

/// An adjustment as a primitive writes it: a ledger row with reason `adjust`, its kind, the
/// client's reference and the change's key.
#[derive(Debug, Clone, Copy)]
pub struct AdjustWrite<'a> {
    /// The SKU.
    pub sku: &'a SkuId,
    /// Units added (positive) or removed (negative).
    pub delta: i64,
    /// The kind, stored in the row's `adjustment` column.
    pub kind: crate::domain::AdjustmentKind,
    /// The client's reference.
    pub reference: Option<&'a str>,
    /// The key the row carries.
    pub key: &'a IdempotencyKey,
}

/// An order as the database holds it: the lines it was claimed with and its ledger rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    /// The canonical lines the order id was claimed with (see
    /// [`crate::OrderRequest::canonical_lines`]).
    pub lines: String,
    /// Its ledger rows (reason `order`, reference the order id), in id order.
    pub entries: Vec<LedgerEntry>,
}

/// A hold as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHold {
    /// Its id.
    pub hold_id: HoldId,
    /// The canonical lines it was claimed with.
    pub lines: String,
    /// Its stored state (an `Active` hold may be `due`).
    pub state: HoldState,
    /// When it stops holding its units.
    pub expires_at: DateTime<Utc>,
    /// Active and past `expires_at` on the database's clock when read.
    pub due: bool,
    /// Its ledger rows (reasons `reserve`, `confirm`, `release`, `expire`), in id order.
    pub entries: Vec<LedgerEntry>,
}

/// One hold row as an adapter reads it, in column order: hold id, canonical lines, state,
/// expires_at, and whether it is due (1) or not (0) on the database's clock.
pub type StoredHoldRow = (String, String, String, DateTime<Utc>, i64);

impl StoredHold {
    /// Builds a hold from its row and its ledger rows, re-checking the row.
    pub fn from_stored(row: StoredHoldRow, entries: Vec<LedgerEntry>) -> Result<Self, DeductError> {
        let (hold_id, lines, state, expires_at, due) = row;
        Ok(Self {
            hold_id: HoldId::parse(hold_id)
                .map_err(|e| DeductError::internal("stored hold id is invalid", e))?,
            lines,
            state: HoldState::from_db(&state).ok_or(DeductError::Internal {
                context: "stored hold state is unknown",
                source: None,
            })?,
            expires_at,
            due: due != 0,
            entries,
        })
    }
}

/// The SKU row, read under this transaction's lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedRow {
    /// The row's own stock.
    pub stock: i64,
    /// What to add to a row stock to report the SKU's total: the stock held in `Sharded`
    /// buckets as the adapter sees it (0 for a SKU never spread).
    pub bucket_offset: i64,
    /// The SKU was spread over `Sharded` buckets at some point, so a refusal planned
    /// against the row alone is not final.
    pub sharded: bool,
}

impl LockedRow {
    /// The `stock_after` to record when the row is left with `row_stock_after` units.
    pub fn reported(self, row_stock_after: i64) -> i64 {
        (row_stock_after + self.bucket_offset).max(0)
    }
}

/// A row read without a lock, for the optimistic compare-and-set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VersionedRow {
    /// The row's stock.
    pub stock: i64,
    /// The row's version, bumped by every write to it (spreading and gathering included).
    pub version: i64,
    /// The SKU had been spread over `Sharded` buckets when read; current whenever the version
    /// still matches.
    pub sharded: bool,
}

/// The SKU row and all its buckets, locked (the `Sharded` consistent path and gathering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllLocked {
    /// No such SKU.
    Missing,
    /// Locked: the row's stock and each `(bucket, stock)`.
    Locked {
        /// The row's own stock.
        row_stock: i64,
        /// Every bucket of the SKU, in bucket order.
        buckets: Vec<(i64, i64)>,
    },
    /// Buckets appeared while the locks were being taken; take them again.
    Changed,
}

/// Whether a lock request waits for a row another transaction holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockWait {
    /// Wait up to the lock timeout.
    Wait,
    /// Fail at once with `LockTimeout` (`NOWAIT`).
    NoWait,
}

/// The primitives one database supplies. Methods return `impl Future + Send`, so the trait
/// is used generically (`Engine<B>`), never as `dyn`.
pub trait Backend: AuditCheckpoints + Send + Sync + Sized + 'static {
    /// Everything needed to open the backend, including the engine's settings.
    type Config: Clone + fmt::Debug + Send + Sync + 'static;
    /// An open transaction.
    type Tx: Send;

    /// Opens the pool (failing fast if the server is unreachable). Does not migrate.
    fn open(config: Self::Config) -> impl Future<Output = Result<Self, DeductError>> + Send;
    /// The engine's settings within `config`.
    fn engine_config(config: &Self::Config) -> EngineConfig;
    /// Applies the embedded migrations.
    fn migrate(&self) -> impl Future<Output = Result<(), DeductError>> + Send;
    /// A short name: `postgres`, `mariadb`, `mysql`, `sqlite`.
    fn name(&self) -> &'static str;
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;
    /// Asks the server what it really does: each clause of [`Backend::lock_features`] tried
    /// on a row another session holds. Needs the schema (run it after migrating).
    fn probe(&self) -> impl Future<Output = Result<ServerProbe, DeductError>> + Send;
    /// The locking clauses this adapter's SQL for `strategy` relies on.
    fn lock_features(&self, strategy: Strategy) -> &'static [LockFeature];
    /// Pool occupancy.
    fn pool_status(&self) -> PoolStatus;
    /// How long calls waited for a pooled connection: every acquire records into it,
    /// transactions and autocommit statements alike.
    fn pool_wait(&self) -> &super::PoolWaitStats;
    /// Closes the pool.
    fn close(&self) -> impl Future<Output = ()> + Send;

    // Reads. None of them can commit.

    /// Succeeds when the database answers and the schema is in place.
    fn ping(&self) -> impl Step<()>;
    /// One SKU's stock (row plus buckets) and initial stock.
    fn stock(&self, sku: &SkuId) -> impl Step<Option<StockLevel>>;
    /// A page of one SKU's ledger, oldest first (empty also for an unknown SKU).
    fn ledger(&self, sku: &SkuId, page: LedgerPage) -> impl Step<Vec<LedgerEntry>>;
    /// The per-SKU figures the audit reconciles, in one query.
    fn snapshot(&self) -> impl Step<Vec<SkuSnapshot>>;
    /// Ledger rows whose SKU has no inventory row, per SKU. Both audits ask. A schema whose
    /// ledger has a foreign key to inventory holds none, so the default reads nothing.
    fn orphan_ledger(&self) -> impl Step<Vec<OrphanLedger>> {
        std::future::ready(Ok(Vec::new()))
    }
    /// The orders the audit checks: how many, and every one whose `order` ledger rows are not
    /// exactly its line count (including rows whose reference no order claimed).
    fn order_check(&self) -> impl Step<OrderCheck>;
    /// One snapshot of the SKU's row and bucket stock, and `key`'s ledger row if asked for.
    fn miss_facts(&self, sku: &SkuId, key: Option<&IdempotencyKey>) -> impl Step<MissFacts>;
    /// The committed ledger rows of any of `keys`.
    fn find_keys(&self, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>>;
    /// Resolution after a lost answer: on a fresh connection, waits until no transaction
    /// holds the SKU's row or bucket locks (the lost one, if its session still lives, ends
    /// first), then reads the ledger rows of `keys`. A key absent here was not committed,
    /// and its lost write can no longer commit. Fails (e.g. `LockTimeout`) when that cannot
    /// be established within the lock timeout.
    fn settle_and_find(&self, sku: &SkuId, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>>;

    /// The order `order_id`, if it was committed.
    fn find_order(&self, order_id: &OrderId) -> impl Step<Option<StoredOrder>>;
    /// Resolution of an order's lost answer: as [`Backend::settle_and_find`], waiting out
    /// whatever holds any of `skus`' rows, then reading the order.
    fn settle_and_find_order(&self, skus: &[&SkuId], order_id: &OrderId) -> impl Step<Option<StoredOrder>>;

    /// The hold `hold_id`, if it was committed.
    fn find_hold(&self, hold_id: &HoldId) -> impl Step<Option<StoredHold>>;
    /// Resolution of a hold change's lost answer: waits out whatever holds the hold's row,
    /// then any of `skus`' rows (that order: the one every hold change takes), then reads the
    /// hold.
    fn settle_and_find_hold(&self, skus: &[&SkuId], hold_id: &HoldId) -> impl Step<Option<StoredHold>>;
    /// Whether an active hold with a line on `sku` is past its `expires_at` (the database's
    /// clock). A plain read: the cheap check before a refusal.
    fn has_due_holds(&self, sku: &SkuId) -> impl Step<bool>;
    /// The holds the audit checks: how many, those whose ledger rows do not fit their state,
    /// and SKUs whose `reserved` is not the sum of their active holds.
    fn hold_check(&self) -> impl Step<HoldCheck>;

    // Self-contained writes. Each MAY COMMIT.

    /// Creates a SKU; `false` when it already exists.
    fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> impl Step<bool>;
    /// Adds `change.quantity` and writes the ledger row; `None` (nothing written) when the
    /// SKU does not exist or the total would pass `STOCK_MAX`.
    fn restock(&self, change: Change<'_>) -> impl Step<Option<Written>>;
    /// `Guarded`: one conditional decrement of the row plus the ledger row; `None` (nothing
    /// written) when the row does not exist or holds too little.
    fn guarded_deduct(&self, change: Change<'_>) -> impl Step<Option<Written>>;
    /// `Optimistic`'s read (no lock).
    fn read_versioned(&self, sku: &SkuId) -> impl Step<Option<VersionedRow>>;
    /// `Optimistic`'s write: sets the row to `row_stock_after` if its version is still
    /// `read.version`, plus the ledger row; `None` (nothing written) when the version moved.
    fn compare_and_set(
        &self,
        change: Change<'_>,
        read: VersionedRow,
        row_stock_after: i64,
    ) -> impl Step<Option<Written>>;
    /// `Sharded`'s fast path: take from one free bucket with room, or from the free row of a
    /// SKU not yet spread (unless `spread_eagerly`). `None` (nothing written) sends the engine
    /// to the consistent path.
    fn take_from_bucket(&self, change: Change<'_>, spread_eagerly: bool) -> impl Step<Option<Written>> {
        let _ = (change, spread_eagerly);
        unsupported("take_from_bucket")
    }

    /// Whether [`Backend::write_batch_alone`] exists: a coalesced batch is then first sent
    /// as one self-contained statement, so the row is held by the server alone (no client
    /// round trip inside the lock), and planned under the lock only when that statement does
    /// not apply it.
    fn writes_batch_alone(&self) -> bool {
        false
    }

    /// `Coalesced`, self-contained (commits on success): when the SKU's unsharded row covers
    /// every request of `rows` (units, key) together, takes their sum from it and writes one
    /// ledger row per request, FIFO, each with its stock after. Returns `(ledger id, stock
    /// after)` per request in `rows` order, or `None` with nothing written when the row is
    /// missing, sharded or short. A key already in the ledger fails it whole (`KeyTaken`).
    fn write_batch_alone(
        &self,
        sku: &SkuId,
        rows: &[(i64, &IdempotencyKey)],
    ) -> impl Step<Option<Vec<(i64, i64)>>> {
        let _ = (sku, rows);
        unsupported("write_batch_alone")
    }

    // Transaction steps. Only `commit` may commit.

    /// Starts a transaction. `wait` matters where the lock is taken at BEGIN (SQLite).
    fn begin(&self, wait: LockWait) -> impl Step<Self::Tx>;
    /// Locks the SKU row for writing; `None` when the SKU does not exist.
    fn lock_row(&self, tx: &mut Self::Tx, sku: &SkuId, wait: LockWait) -> impl Step<Option<LockedRow>>;
    /// Sets the locked row's stock to `row_stock_after` and writes the ledger row with
    /// `stock_after`.
    fn write_row(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written>;
    /// Writes a planned batch on the locked row: the stock, then one ledger row per
    /// `plan.new_rows`. Returns their ids in plan order (read back by key, never assumed
    /// consecutive).
    fn write_batch(&self, tx: &mut Self::Tx, sku: &SkuId, plan: &BatchPlan) -> impl Step<Vec<i64>>;
    /// Claims an order id inside the transaction, storing its canonical `lines` and their
    /// count; `KeyTaken` when the id is already claimed (a concurrent claim waits for the
    /// other transaction to end).
    fn claim_order(
        &self,
        tx: &mut Self::Tx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> impl Step<()>;
    /// Claims several order ids at once (a coalesced batch's successes, in id order);
    /// `KeyTaken` when any is already claimed, and then none may be kept (the caller rolls
    /// back). One multi-row statement where the database allows; by default one
    /// [`Backend::claim_order`] each.
    fn claim_orders(&self, tx: &mut Self::Tx, claims: &[OrderClaim<'_>]) -> impl Step<()> {
        async move {
            for claim in claims {
                self.claim_order(tx, claim.order_id, claim.lines, claim.line_count)
                    .await?;
            }
            Ok(())
        }
    }
    /// Claims a hold id inside the transaction, storing its canonical `lines` and their count,
    /// active until `ttl_s` seconds from now on the database's clock; returns that time.
    /// `KeyTaken` when the id is already claimed (a concurrent claim waits for the other
    /// transaction to end).
    fn claim_hold(
        &self,
        tx: &mut Self::Tx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> impl Step<DateTime<Utc>>;
    /// Locks the rows of `skus` (distinct, in canonical order, which is the order the locks
    /// are taken in) and reads them; `None` for a SKU that does not exist. One statement
    /// where the database locks in a stated order; by default one [`Backend::lock_row`] each.
    fn lock_rows(&self, tx: &mut Self::Tx, skus: &[&SkuId]) -> impl Step<Vec<Option<LockedRow>>> {
        async move {
            let mut rows = Vec::with_capacity(skus.len());
            for sku in skus {
                rows.push(self.lock_row(tx, sku, LockWait::Wait).await?);
            }
            Ok(rows)
        }
    }
    /// Locks the hold's row for this transaction and reads it; `None` when no such hold.
    fn lock_hold(&self, tx: &mut Self::Tx, hold_id: &HoldId) -> impl Step<Option<StoredHold>>;
    /// Locks up to `limit` due holds (active, past `expires_at`), oldest expiry first, and
    /// reads them. With `sku`, only holds with a line on it, waiting for any another
    /// transaction has locked; without, any due hold, skipping those another transaction has
    /// locked (`SKIP LOCKED`; SQLite has one writer, so none are).
    fn lock_due_holds(
        &self,
        tx: &mut Self::Tx,
        sku: Option<&SkuId>,
        limit: u32,
    ) -> impl Step<Vec<StoredHold>>;
    /// Sets a locked hold's state (a final one), stamping when it was resolved.
    fn set_hold_state(&self, tx: &mut Self::Tx, hold_id: &HoldId, state: HoldState) -> impl Step<()>;
    /// Sets the locked row's stock to `row_stock_after` (and moves `reserved` as the line's
    /// reason says), and writes the line's ledger row with `stock_after`.
    fn write_line(
        &self,
        tx: &mut Self::Tx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written>;
    /// Writes a coalesced batch's lines on their locked rows (see [`PlannedLine`]): each
    /// row left at its last line's `row_stock_after`, `reserved` moved by every line, and one
    /// ledger row per line (the lines of one call share one reason, and each (reference,
    /// SKU) pair comes once). Returns what each line wrote, in `lines` order. One round trip
    /// where the database allows; by default one [`Backend::write_line`] each.
    fn write_lines(&self, tx: &mut Self::Tx, lines: &[PlannedLine<'_>]) -> impl Step<Vec<Written>> {
        async move {
            let mut written = Vec::with_capacity(lines.len());
            for planned in lines {
                written.push(
                    self.write_line(tx, planned.line, planned.row_stock_after, planned.stock_after)
                        .await?,
                );
            }
            Ok(written)
        }
    }
    /// One conditional write of the SKU row inside the transaction (taking its lock as it
    /// writes), moving `stock` and `reserved` as the line's reason says, plus the line's
    /// ledger row; `None` (nothing written) when the row does not exist, or either column
    /// would go below zero.
    fn guarded_line(&self, tx: &mut Self::Tx, line: LineWrite<'_>) -> impl Step<Option<Written>>;
    /// Sets the locked row's stock to `row_stock_after` and writes the adjustment's ledger
    /// row with `stock_after`; `KeyTaken` when its key was used before.
    fn write_adjustment(
        &self,
        tx: &mut Self::Tx,
        adjustment: AdjustWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written>;
    /// Locks the SKU row and every bucket, in this database's lock order.
    fn lock_all(&self, tx: &mut Self::Tx, sku: &SkuId) -> impl Step<AllLocked> {
        let _ = (tx, sku);
        unsupported("lock_all")
    }
    /// With everything locked: writes `buckets` as `(bucket, stock)`, empties the row, marks
    /// the SKU spread, and writes the deduction's ledger row with `stock_after`.
    fn write_spread(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        buckets: &[(i64, i64)],
        stock_after: i64,
    ) -> impl Step<Written> {
        let _ = (tx, change, buckets, stock_after);
        unsupported("write_spread")
    }
    /// With everything locked: moves `bucket_stock` units from the buckets into the row (no
    /// ledger row: the total does not change).
    fn write_gather(&self, tx: &mut Self::Tx, sku: &SkuId, bucket_stock: i64) -> impl Step<()> {
        let _ = (tx, sku, bucket_stock);
        unsupported("write_gather")
    }
    /// Commits. MAY COMMIT.
    fn commit(&self, tx: Self::Tx) -> impl Step<()>;
    /// Rolls back, releasing every lock before it returns.
    fn rollback(&self, tx: Self::Tx) -> impl Future<Output = ()> + Send;
}

fn unsupported<T: Send>(primitive: &'static str) -> impl Step<T> {
    std::future::ready(Err(Fault::bare(FaultKind::Unsupported, primitive)))
}
