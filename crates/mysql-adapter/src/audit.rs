//! The incremental audit's SQL on MariaDB and MySQL (the flow is core's).

use sqlx::mysql::MySql;
use stockguard_core::engine::{AuditCheckpoints, Step};
use stockguard_core::{AuditCheckpoint, CheckpointedSnapshot, SkuId};
use stockguard_sql as common;

use crate::backend::MySqlBackend;

/// The SKU's row stock plus its `Sharded` buckets.
macro_rules! stock_with_buckets {
    () => {
        "CAST(i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED)"
    };
}

/// Σ, count and highest id of the SKU's ledger rows after the id `$after`.
macro_rules! rows_after {
    ($after:literal) => {
        concat!(
            "CAST(COALESCE((SELECT SUM(l.delta) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            "), 0) AS SIGNED), ",
            "CAST((SELECT COUNT(*) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            ") AS SIGNED), ",
            "CAST(COALESCE((SELECT MAX(l.id) FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > ",
            $after,
            "), 0) AS SIGNED)"
        )
    };
}

/// Every SKU with its checkpoint and the ledger rows after it, in one statement (one read
/// view). MariaDB has no LATERAL: each figure is a correlated subquery, one `(sku, id)` index
/// range per SKU, so only the rows after each checkpoint are read.
const CHECKPOINTED_SNAPSHOT: &str = concat!(
    "SELECT i.sku, i.initial_stock, ",
    stock_with_buckets!(),
    ", COALESCE(c.through_ledger_id, 0), COALESCE(c.ledger_delta_sum, 0), COALESCE(c.ledger_rows, 0), ",
    rows_after!("COALESCE(c.through_ledger_id, 0)"),
    " FROM inventory i LEFT JOIN inventory_audit_checkpoint c ON c.sku = i.sku ORDER BY i.sku"
);

/// `?` sku: the same row for one SKU, read from its first ledger row.
const SNAPSHOT_FROM_START: &str = concat!(
    "SELECT i.sku, i.initial_stock, ",
    stock_with_buckets!(),
    ", 0, 0, 0, ",
    rows_after!("0"),
    " FROM inventory i WHERE i.sku = ?"
);

/// `VALUES()` is deprecated on MySQL 8.0.20+ but still works, and MariaDB has no row alias.
const ON_CONFLICT: &str = " ON DUPLICATE KEY UPDATE through_ledger_id = VALUES(through_ledger_id), \
     ledger_delta_sum = VALUES(ledger_delta_sum), ledger_rows = VALUES(ledger_rows)";

impl AuditCheckpoints for MySqlBackend {
    fn checkpointed_snapshot(&self) -> impl Step<Vec<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("auditing since the checkpoint").await?;
            let rows = common::checkpointed::<MySql>(&mut connection, CHECKPOINTED_SNAPSHOT, None)
                .await
                .map_err(self.fault("auditing since the checkpoint"))?;
            common::checkpointed_snapshots(rows)
        }
    }

    fn snapshot_from_start(&self, sku: &SkuId) -> impl Step<Option<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("re-reading a SKU's ledger").await?;
            let rows = common::checkpointed::<MySql>(&mut connection, SNAPSHOT_FROM_START, Some(sku))
                .await
                .map_err(self.fault("re-reading a SKU's ledger"))?;
            Ok(common::checkpointed_snapshots(rows)?.into_iter().next())
        }
    }

    fn save_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> impl Step<()> {
        async move {
            let mut connection = self.connection("saving audit checkpoints").await?;
            common::save_checkpoints::<MySql>(&mut connection, checkpoints, ON_CONFLICT)
                .await
                .map_err(self.fault("saving audit checkpoints"))
        }
    }
}
