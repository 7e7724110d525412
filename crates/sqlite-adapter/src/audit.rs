//! The incremental audit's SQL on SQLite (the flow is core's).

use sqlx::sqlite::Sqlite;
use stockguard_core::engine::{AuditCheckpoints, Step};
use stockguard_core::{AuditCheckpoint, CheckpointedSnapshot, SkuId};
use stockguard_sql as common;

use crate::backend::{SqliteBackend, fault};

/// Σ, count and highest id of the SKU's ledger rows after the id `$after`: each one range of
/// the `(sku, id)` index.
macro_rules! rows_after {
    ($after:literal) => {
        concat!(
            "COALESCE((SELECT SUM(l.delta) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            "), 0), ",
            "(SELECT COUNT(*) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            "), ",
            "COALESCE((SELECT MAX(l.id) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            "), 0)"
        )
    };
}

/// Every SKU with its checkpoint and the ledger rows after it: one statement reads one WAL
/// snapshot. SQLite has no buckets.
const CHECKPOINTED_SNAPSHOT: &str = concat!(
    "SELECT i.sku, i.initial_stock, i.stock, ",
    "COALESCE(c.through_ledger_id, 0), COALESCE(c.ledger_delta_sum, 0), COALESCE(c.ledger_rows, 0), ",
    rows_after!("COALESCE(c.through_ledger_id, 0)"),
    " FROM inventory i LEFT JOIN inventory_audit_checkpoint c ON c.sku = i.sku ORDER BY i.sku"
);

/// `?1` sku: the same row for one SKU, read from its first ledger row.
const SNAPSHOT_FROM_START: &str = concat!(
    "SELECT i.sku, i.initial_stock, i.stock, 0, 0, 0, ",
    rows_after!("0"),
    " FROM inventory i WHERE i.sku = ?1"
);

const ON_CONFLICT: &str = " ON CONFLICT (sku) DO UPDATE SET through_ledger_id = excluded.through_ledger_id, \
     ledger_delta_sum = excluded.ledger_delta_sum, ledger_rows = excluded.ledger_rows, \
     verified_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

impl AuditCheckpoints for SqliteBackend {
    fn checkpointed_snapshot(&self) -> impl Step<Vec<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("auditing since the checkpoint").await?;
            let rows = common::checkpointed::<Sqlite>(&mut connection, CHECKPOINTED_SNAPSHOT, None)
                .await
                .map_err(fault("auditing since the checkpoint"))?;
            common::checkpointed_snapshots(rows)
        }
    }

    fn snapshot_from_start(&self, sku: &SkuId) -> impl Step<Option<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("re-reading a SKU's ledger").await?;
            let rows = common::checkpointed::<Sqlite>(&mut connection, SNAPSHOT_FROM_START, Some(sku))
                .await
                .map_err(fault("re-reading a SKU's ledger"))?;
            Ok(common::checkpointed_snapshots(rows)?.into_iter().next())
        }
    }

    fn save_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> impl Step<()> {
        async move {
            let mut connection = self.connection("saving audit checkpoints").await?;
            common::save_checkpoints::<Sqlite>(&mut connection, checkpoints, ON_CONFLICT)
                .await
                .map_err(fault("saving audit checkpoints"))
        }
    }
}
