//! The incremental audit's checkpoint, and what it reconciles.
//!
//! A checkpoint says, per SKU: "in one consistent snapshot, the ledger rows with ids up to
//! `through_ledger_id` summed to `ledger_delta_sum` over `ledger_rows` rows, and with the stock
//! of that snapshot they reconciled". The incremental audit then reads only the rows after
//! that id, and checks `initial + checkpoint sum + Σ new deltas = stock`.
//!
//! What it proves, and what it does not: a change to a row *after* the checkpoint (or to the
//! stock) is caught, exactly as the full audit catches it. A change to a row the checkpoint
//! already covers is not: that is the price of not reading it, and what `--full` is for.

use serde::Serialize;

use super::{Discrepancy, SkuId, SkuSnapshot};

/// One SKU's verified figures, as the incremental audit stores them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditCheckpoint {
    /// The SKU.
    pub sku: SkuId,
    /// The highest ledger id of the SKU that the checkpoint covers.
    pub through_ledger_id: i64,
    /// Σ of the covered rows' deltas.
    pub ledger_delta_sum: i64,
    /// Number of covered rows.
    pub ledger_rows: i64,
}

/// One row of an adapter's checkpointed read, in column order: sku, initial stock, stock
/// (row plus buckets), then the checkpoint's through id, Σ and rows (0 without one), then the
/// newer rows' Σ, count and highest id (0 without any).
pub type StoredCheckpointedRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);

/// One SKU as the incremental audit reads it: its stock, its checkpoint, and the ledger rows
/// after the checkpoint, all from one consistent snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointedSnapshot {
    /// The SKU.
    pub sku: SkuId,
    /// Stock at creation.
    pub initial_stock: i64,
    /// Stock now (row plus buckets).
    pub stock: i64,
    /// The stored checkpoint (through id 0 and zero sums when there is none).
    pub checkpoint: AuditCheckpoint,
    /// Σ of the deltas of the rows after the checkpoint.
    pub new_delta_sum: i64,
    /// Number of rows after the checkpoint.
    pub new_rows: i64,
    /// The highest id among them (0 without any).
    pub new_through_ledger_id: i64,
}

impl CheckpointedSnapshot {
    /// From an adapter's rows, each SKU id re-checked.
    pub fn from_stored_rows(rows: Vec<StoredCheckpointedRow>) -> Result<Vec<Self>, crate::DeductError> {
        rows.into_iter()
            .map(
                |(sku, initial_stock, stock, through, sum, count, new_sum, new_count, new_through)| {
                    let sku = SkuId::parse(sku)
                        .map_err(|e| crate::DeductError::internal("stored sku id is invalid", e))?;
                    Ok(Self {
                        checkpoint: AuditCheckpoint {
                            sku: sku.clone(),
                            through_ledger_id: through,
                            ledger_delta_sum: sum,
                            ledger_rows: count,
                        },
                        sku,
                        initial_stock,
                        stock,
                        new_delta_sum: new_sum,
                        new_rows: new_count,
                        new_through_ledger_id: new_through,
                    })
                },
            )
            .collect()
    }

    /// The SKU's whole-ledger figures as the checkpoint and the new rows make them up.
    pub fn as_snapshot(&self) -> SkuSnapshot {
        SkuSnapshot {
            sku: self.sku.clone(),
            initial_stock: self.initial_stock,
            stock: self.stock,
            ledger_delta_sum: self.checkpoint.ledger_delta_sum + self.new_delta_sum,
            ledger_rows: self.checkpoint.ledger_rows + self.new_rows,
        }
    }

    /// What is wrong, if anything: stock below zero, or `initial + Σ ≠ stock`.
    pub fn discrepancy(&self) -> Option<Discrepancy> {
        Discrepancy::of(&self.as_snapshot())
    }

    /// The checkpoint to store once this SKU reconciled: it now covers the new rows too.
    /// `None` when there are no new rows: the stored one (or none, which reads as zeros)
    /// already says the same.
    pub fn advanced(&self) -> Option<AuditCheckpoint> {
        if self.new_rows == 0 {
            return None;
        }
        Some(AuditCheckpoint {
            sku: self.sku.clone(),
            through_ledger_id: self.new_through_ledger_id.max(self.checkpoint.through_ledger_id),
            ledger_delta_sum: self.checkpoint.ledger_delta_sum + self.new_delta_sum,
            ledger_rows: self.checkpoint.ledger_rows + self.new_rows,
        })
    }
}

/// What the incremental audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct IncrementalAuditReport {
    /// SKUs checked (every SKU: the per-SKU check is cheap).
    pub skus_checked: u64,
    /// Ledger rows read and verified: those after each SKU's checkpoint, plus the whole ledger
    /// of every SKU re-read from the start.
    pub ledger_rows_verified: u64,
    /// Ledger rows the checkpoints vouched for without reading them.
    pub ledger_rows_checkpointed: u64,
    /// SKUs whose checkpointed figures did not add up and were re-read from the start. A row
    /// that committed after a checkpoint with an id below its mark (two `Sharded` buckets of
    /// one SKU commit in any order) does this; a SKU that still fails is a discrepancy.
    pub skus_reread: u64,
    /// Checkpoints written (one per SKU with new rows that reconciled).
    pub checkpoints_saved: u64,
    /// SKUs that broke an invariant; empty when the audit passes. Their checkpoints are not
    /// advanced.
    pub discrepancies: Vec<Discrepancy>,
}

impl IncrementalAuditReport {
    /// True when every SKU reconciles.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(stock: i64, checkpoint: (i64, i64, i64), new: (i64, i64, i64)) -> CheckpointedSnapshot {
        let sku = SkuId::parse("s").unwrap();
        CheckpointedSnapshot {
            checkpoint: AuditCheckpoint {
                sku: sku.clone(),
                through_ledger_id: checkpoint.0,
                ledger_delta_sum: checkpoint.1,
                ledger_rows: checkpoint.2,
            },
            sku,
            initial_stock: 10,
            stock,
            new_delta_sum: new.0,
            new_rows: new.1,
            new_through_ledger_id: new.2,
        }
    }

    #[test]
    fn the_checkpoint_and_the_new_rows_add_up() {
        // 10 − 3 (checkpointed, 3 rows through id 7) − 2 (2 new rows through id 12) = 5.
        let ok = row(5, (7, -3, 3), (-2, 2, 12));
        assert_eq!(ok.discrepancy(), None);
        let next = ok.advanced().unwrap();
        assert_eq!(
            (next.through_ledger_id, next.ledger_delta_sum, next.ledger_rows),
            (12, -5, 5)
        );
        // One unit off: a gap of one.
        assert_eq!(
            row(4, (7, -3, 3), (-2, 2, 12)).discrepancy().unwrap().ledger_gap,
            1
        );
    }

    #[test]
    fn nothing_new_stores_nothing() {
        assert_eq!(row(7, (7, -3, 3), (0, 0, 0)).advanced(), None);
        assert_eq!(row(10, (0, 0, 0), (0, 0, 0)).advanced(), None);
    }
}
