//! Changes as they are asked for, and the receipts that prove them.

use serde::Serialize;

use super::{IdempotencyKey, Quantity, SkuId, Strategy};

/// One deduction, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeductRequest {
    /// Which SKU to deduct from.
    pub sku: SkuId,
    /// How many units.
    pub quantity: Quantity,
    /// When set, a repeat of this request returns the first receipt and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
    /// How to make the deduction safe.
    pub strategy: Strategy,
    /// When set, a conditional deduction: it applies only if the SKU row's version (as read
    /// by [`StockLevel::version`]) is still this one, else `VersionMismatch`. The seed
    /// article's optimistic flow with the client holding the version, made safe: one
    /// compare-and-set, no retry, no lost update. The strategy is not used.
    pub expected_version: Option<i64>,
}

impl DeductRequest {
    /// A request with no idempotency key.
    pub fn new(sku: SkuId, quantity: Quantity, strategy: Strategy) -> Self {
        Self {
            sku,
            quantity,
            idempotency_key: None,
            strategy,
            expected_version: None,
        }
    }

    /// Makes the deduction conditional on the SKU row's version.
    pub fn with_expected_version(mut self, version: i64) -> Self {
        self.expected_version = Some(version);
        self
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// Proof of a committed deduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Receipt {
    /// The SKU deducted from.
    pub sku: SkuId,
    /// Units deducted.
    pub quantity: Quantity,
    /// Stock left right after this deduction committed.
    pub remaining: i64,
    /// The ledger row written for this deduction.
    pub ledger_id: i64,
    /// Attempts this call made (1 unless a version miss, deadlock or serialization failure
    /// was retried). A replay reports the attempts of the replaying call.
    pub attempts: u32,
    /// True when this receipt was read back from the ledger rather than returned by this
    /// call's own write: the key had already been used (this is the first receipt again), or
    /// this call's answer was lost and its client key was then found (it may have been an
    /// earlier call that committed it; either way it committed exactly once).
    pub replayed: bool,
    /// Time this call spent waiting for the right to change the row, in microseconds: the
    /// duration of the statements that take the row lock, plus queue time when coalesced.
    /// The harness uses it to measure the conflict rate.
    pub lock_wait_us: u64,
    /// The key the ledger row carries: the client's, or one the engine generated.
    pub idempotency_key: IdempotencyKey,
}

/// Proof of a committed restock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestockReceipt {
    /// The SKU restocked.
    pub sku: SkuId,
    /// Units added.
    pub quantity: Quantity,
    /// Stock right after the restock committed.
    pub stock_after: i64,
    /// The ledger row written for this restock.
    pub ledger_id: i64,
    /// True when the idempotency key had already been used and this is the first receipt again.
    pub replayed: bool,
    /// The key the ledger row carries: the client's, or one the engine generated.
    pub idempotency_key: IdempotencyKey,
}

/// One restock, fully parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestockRequest {
    /// Which SKU to restock.
    pub sku: SkuId,
    /// How many units to add.
    pub quantity: Quantity,
    /// When set, a repeat of this request returns the first receipt and changes nothing.
    pub idempotency_key: Option<IdempotencyKey>,
}

impl RestockRequest {
    /// A request with no idempotency key.
    pub fn new(sku: SkuId, quantity: Quantity) -> Self {
        Self {
            sku,
            quantity,
            idempotency_key: None,
        }
    }

    /// Sets the idempotency key.
    pub fn with_idempotency_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotency_key = Some(key);
        self
    }
}

/// A SKU's current stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StockLevel {
    /// The SKU.
    pub sku: SkuId,
    /// Units available to sell now: on hand less the units of active holds. A hold past its
    /// `expires_at` counts as available at once, before the sweeper writes its expiry.
    pub stock: i64,
    /// Units set aside by active holds (unexpired); on hand is `stock + reserved`.
    pub reserved: i64,
    /// Stock the SKU was created with; the audit reconciles the ledger against it.
    pub initial_stock: i64,
    /// The SKU row's version, bumped by every write to the row (not by `Sharded` bucket
    /// deductions, which leave the row alone). A conditional deduction names it.
    pub version: i64,
}
