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
}

impl LedgerReason {
    /// The value stored in the `reason` column.
    pub fn as_str(self) -> &'static str {
        match self {
            LedgerReason::Deduct => "deduct",
            LedgerReason::Restock => "restock",
            LedgerReason::Order => "order",
        }
    }

    /// Parses the stored column value.
    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "deduct" => Some(LedgerReason::Deduct),
            "restock" => Some(LedgerReason::Restock),
            "order" => Some(LedgerReason::Order),
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
}

/// One ledger row as an adapter reads it, in column order: id, sku, delta, stock_after,
/// reason, idempotency key, created_at. [`LedgerEntry::from_stored`] re-checks it.
pub type StoredLedgerRow = (i64, String, i64, i64, String, Option<String>, DateTime<Utc>);

impl LedgerEntry {
    /// Builds an entry from a stored row, re-checking the SKU id and the reason.
    pub fn from_stored(row: StoredLedgerRow) -> Result<Self, crate::DeductError> {
        let (id, sku, delta, stock_after, reason, idempotency_key, created_at) = row;
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
