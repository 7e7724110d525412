//! The primitives behind the incremental audit (see [`crate::domain::AuditCheckpoint`]).
//!
//! A supertrait of [`super::Backend`], kept apart because it is the audit's, not the write
//! path's. All three are plain reads or an idempotent upsert: none can commit a stock change.

use super::fault::Step;
use crate::domain::{AuditCheckpoint, CheckpointedSnapshot, SkuId};

/// What an adapter supplies for the incremental audit.
pub trait AuditCheckpoints {
    /// Every SKU, with its stored checkpoint and the Σ, count and highest id of its ledger
    /// rows after that checkpoint, read in one consistent snapshot (one statement). It reads
    /// only the rows after each checkpoint, through the ledger's `(sku, id)` index.
    fn checkpointed_snapshot(&self) -> impl Step<Vec<CheckpointedSnapshot>>;

    /// One SKU read as if it had no checkpoint (its whole ledger), in one snapshot; `None`
    /// for an unknown SKU.
    fn snapshot_from_start(&self, sku: &SkuId) -> impl Step<Option<CheckpointedSnapshot>>;

    /// Inserts or replaces these checkpoints. A lost answer is harmless: the old checkpoint
    /// and the new one are both true, so the next audit starts from either.
    fn save_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> impl Step<()>;
}
