//! The incremental audit's primitives over the in-memory tables.

use crate::domain::{AuditCheckpoint, CheckpointedSnapshot, SkuId};
use crate::engine::{AuditCheckpoints, Step};

use super::MemoryBackend;
use super::tables::Tables;
use super::tx::committed;

impl Tables {
    /// One SKU's row as the checkpointed read returns it; with `from_start`, as if it had no
    /// checkpoint.
    fn checkpointed(&self, sku: &SkuId, from_start: bool) -> Option<CheckpointedSnapshot> {
        let row = self.skus.get(sku.as_str())?;
        let checkpoint = self
            .checkpoints
            .get(sku.as_str())
            .filter(|_| !from_start)
            .cloned()
            .unwrap_or(AuditCheckpoint {
                sku: sku.clone(),
                through_ledger_id: 0,
                ledger_delta_sum: 0,
                ledger_rows: 0,
            });
        let newer: Vec<_> = self
            .by_sku
            .get(sku.as_str())
            .into_iter()
            .flatten()
            .map(|&i| &self.ledger[i])
            .filter(|entry| entry.id > checkpoint.through_ledger_id)
            .collect();
        Some(CheckpointedSnapshot {
            sku: sku.clone(),
            initial_stock: row.initial_stock,
            stock: row.stock,
            new_delta_sum: newer.iter().map(|entry| entry.delta).sum(),
            new_rows: i64::try_from(newer.len()).unwrap_or(i64::MAX),
            new_through_ledger_id: newer.iter().map(|entry| entry.id).max().unwrap_or(0),
            checkpoint,
        })
    }
}

impl AuditCheckpoints for MemoryBackend {
    fn checkpointed_snapshot(&self) -> impl Step<Vec<CheckpointedSnapshot>> {
        self.read(|tables| {
            tables
                .skus
                .values()
                .filter_map(|row| tables.checkpointed(&row.sku, false))
                .collect()
        })
    }

    fn snapshot_from_start(&self, sku: &SkuId) -> impl Step<Option<CheckpointedSnapshot>> {
        self.read(|tables| tables.checkpointed(sku, true))
    }

    fn save_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> impl Step<()> {
        let mut tables = committed(&self.tables);
        for checkpoint in checkpoints {
            tables
                .checkpoints
                .insert(checkpoint.sku.as_str().to_owned(), checkpoint.clone());
        }
        std::future::ready(Ok(()))
    }
}
