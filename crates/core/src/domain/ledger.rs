//! The ledger: one row per change, and how it is read.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{LEDGER_PAGE_MAX, SkuId};
use crate::error::InvalidInput;

/// Why a ledger row was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LedgerReason {
    /// A deduction (negative delta).
    Deduct,
    /// A restock (positive delta).
    Restock,
    /// One line of a multi-line order (negative delta); the row's reference is the order id.
    Order,
    /// A stock adjustment (either sign), with its kind and the client's reference.
    Adjust,
    /// One line of a hold (negative delta: the units leave `stock` for `reserved`); the
    /// row's reference is the hold id.
    Reserve,
    /// One line of a confirmed hold: its units leave `reserved`, sold. `stock` does not move,
    /// so the delta is 0.
    Confirm,
    /// One line of a released hold, or the unconfirmed rest of a partial confirm (positive
    /// delta: back to `stock`).
    Release,
    /// One line of an expired hold (positive delta: back to `stock`).
    Expire,
}

impl LedgerReason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerReason::Deduct => "deduct",
            LedgerReason::Restock => "restock",
            LedgerReason::Order => "order",
            LedgerReason::Adjust => "adjust",
            LedgerReason::Reserve => "reserve",
            LedgerReason::Confirm => "confirm",
            LedgerReason::Release => "release",
            LedgerReason::Expire => "expire",
        }
    }

    /// Parses the stored column value.
    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "deduct" => Some(LedgerReason::Deduct),
            "restock" => Some(LedgerReason::Restock),
            "order" => Some(LedgerReason::Order),
            "adjust" => Some(LedgerReason::Adjust),
            "reserve" => Some(LedgerReason::Reserve),
            "confirm" => Some(LedgerReason::Confirm),
            "release" => Some(LedgerReason::Release),
            "expire" => Some(LedgerReason::Expire),
            _ => None,
        }
    }
}

/// Why stock was adjusted by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentKind {
    /// A customer returned units (positive).
    Return,
    /// Units were damaged or lost (negative).
    Damage,
    /// A stock count found more or fewer units (either sign).
    Recount,
    /// Units arrived outside the restock endpoint (positive).
    Restock,
}

impl AdjustmentKind {
    /// The value stored in the ledger's `adjustment` column.
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentKind::Return => "return",
            AdjustmentKind::Damage => "damage",
            AdjustmentKind::Recount => "recount",
            AdjustmentKind::Restock => "restock",
        }
    }

    /// Parses the stored column value.
    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "return" => Some(AdjustmentKind::Return),
            "damage" => Some(AdjustmentKind::Damage),
            "recount" => Some(AdjustmentKind::Recount),
            "restock" => Some(AdjustmentKind::Restock),
            _ => None,
        }
    }
}

/// One ledger row: every stock change writes exactly one, in the same transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerEntry {
    /// Monotonic id within one database.
    pub id: i64,
    /// The SKU changed.
    pub sku: SkuId,
    /// Signed change: negative for deductions, positive for restocks.
    pub delta: i64,
    /// Stock right after this change.
    pub stock_after: i64,
    /// Why the change happened.
    pub reason: LedgerReason,
    /// The idempotency key of the request that wrote it, if any.
    pub idempotency_key: Option<String>,
    /// Commit-side timestamp.
    pub created_at: DateTime<Utc>,
    /// What the change belongs to: an order's id, an adjustment's client reference.
    pub reference: Option<String>,
    /// The kind of an adjustment (reason `adjust` only).
    pub adjustment: Option<AdjustmentKind>,
}

/// One ledger row as an adapter reads it, in column order: id, sku, delta, stock_after,
/// reason, idempotency key, created_at, reference, adjustment. [`LedgerEntry::from_stored`]
/// re-checks it.
pub type StoredLedgerRow = (
    i64,
    String,
    i64,
    i64,
    String,
    Option<String>,
    DateTime<Utc>,
    Option<String>,
    Option<String>,
);

impl LedgerEntry {
    /// Builds an entry from a stored row, re-checking the SKU id and the reason.
    pub fn from_stored(row: StoredLedgerRow) -> Result<Self, crate::DeductError> {
        let (id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment) = row;
        let adjustment = match adjustment {
            None => None,
            Some(raw) => Some(AdjustmentKind::from_db(&raw).ok_or(crate::DeductError::Internal {
                context: "stored adjustment kind is unknown",
                source: None,
            })?),
        };
        Ok(LedgerEntry {
            id,
            sku: SkuId::parse(sku)
                .map_err(|e| crate::DeductError::internal("stored sku id is invalid", e))?,
            delta,
            stock_after,
            reason: LedgerReason::from_db(&reason).ok_or(crate::DeductError::Internal {
                context: "stored ledger reason is unknown",
                source: None,
            })?,
            idempotency_key,
            created_at,
            reference,
            adjustment,
        })
    }
}

/// Which page of a SKU's ledger to read, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerPage {
    /// Return rows with an id strictly greater than this one.
    pub after_id: Option<i64>,
    /// At most this many rows, 1..=[`LEDGER_PAGE_MAX`].
    pub limit: u32,
}

impl LedgerPage {
    /// The first page of `limit` rows; `limit` is validated.
    pub fn first(limit: u32) -> Result<Self, InvalidInput> {
        Self::after(None, limit)
    }

    /// The page after `after_id`; `limit` is validated.
    pub fn after(after_id: Option<i64>, limit: u32) -> Result<Self, InvalidInput> {
        if limit == 0 || limit > LEDGER_PAGE_MAX {
            return Err(InvalidInput::PageLimitOutOfRange {
                given: limit,
                max: LEDGER_PAGE_MAX,
            });
        }
        Ok(Self { after_id, limit })
    }
}
