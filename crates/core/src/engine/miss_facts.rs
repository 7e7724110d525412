//! What a plain read shows about a SKU when a write matched no row: the facts the engine
//! explains a refusal with, and the row type adapters read them into.

use chrono::{DateTime, Utc};

use crate::domain::LedgerEntry;
use crate::error::DeductError;

/// What one plain read (one snapshot) shows about a SKU: enough to explain a write that
/// matched no row before anything is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MissFacts {
    /// The row's stock; `None` when the SKU does not exist.
    pub row_stock: Option<i64>,
    /// Stock held in the SKU's `Sharded` buckets (0 where buckets do not exist).
    pub bucket_stock: i64,
    /// An active hold past its expiry still holds units of the SKU (by the database's
    /// clock): a refusal is then not final until it is expired (see `expiring_first`).
    pub due_holds: bool,
    /// The committed ledger row of the key asked about, if it has one.
    pub prior: Option<LedgerEntry>,
}

/// One row of an adapter's miss-facts query, in column order: row stock, bucket stock, due
/// holds (1 or 0), then the key's ledger row as nullable columns (see
/// [`crate::StoredLedgerRow`]).
pub type StoredMissFacts = (
    Option<i64>,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    Option<DateTime<Utc>>,
    Option<String>,
    Option<String>,
);

impl MissFacts {
    /// Builds the facts from an adapter's miss-facts row, re-checking the ledger row.
    pub fn from_stored(row: StoredMissFacts) -> Result<Self, DeductError> {
        let (
            row_stock,
            bucket_stock,
            due_holds,
            id,
            sku,
            delta,
            stock_after,
            reason,
            key,
            created_at,
            reference,
            adjustment,
        ) = row;
        let prior = match (id, sku, delta, stock_after, reason, created_at) {
            (Some(id), Some(sku), Some(delta), Some(after), Some(reason), Some(at)) => Some(
                LedgerEntry::from_stored((id, sku, delta, after, reason, key, at, reference, adjustment))?,
            ),
            _ => None,
        };
        Ok(Self {
            row_stock,
            bucket_stock,
            due_holds: due_holds != 0,
            prior,
        })
    }
}
