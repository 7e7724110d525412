//! The incremental audit's SQL on PostgreSQL (the flow is core's).

use sqlx::postgres::Postgres;
use stockguard_core::engine::{AuditCheckpoints, Step};
use stockguard_core::{AuditCheckpoint, CheckpointedSnapshot, DeductError, OrphanLedger, SkuId};
use stockguard_sql as common;

use crate::backend::PgBackend;

/// Every SKU with its checkpoint and the ledger rows after it, in one statement (one
/// snapshot). The lateral subquery is one `(sku, id)` index range per SKU, so only the rows
/// after each checkpoint are read.
const CHECKPOINTED_SNAPSHOT: &str = "SELECT i.sku::text, i.initial_stock, \
         (i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0))::bigint, \
         COALESCE(c.through_ledger_id, 0), COALESCE(c.ledger_delta_sum, 0), COALESCE(c.ledger_rows, 0), \
         COALESCE(n.delta_sum, 0)::bigint, n.row_count, COALESCE(n.through_id, 0) \
     FROM inventory i \
     LEFT JOIN inventory_audit_checkpoint c ON c.sku = i.sku \
     CROSS JOIN LATERAL (SELECT SUM(l.delta) AS delta_sum, COUNT(*) AS row_count, MAX(l.id) AS through_id \
         FROM inventory_ledger l WHERE l.sku = i.sku AND l.id > COALESCE(c.through_ledger_id, 0)) n \
     ORDER BY i.sku";

/// `$1` sku: the same row for one SKU, read from its first ledger row.
const SNAPSHOT_FROM_START: &str = "SELECT i.sku::text, i.initial_stock, \
         (i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0))::bigint, \
         0::bigint, 0::bigint, 0::bigint, COALESCE(n.delta_sum, 0)::bigint, n.row_count, COALESCE(n.through_id, 0) \
     FROM inventory i \
     CROSS JOIN LATERAL (SELECT SUM(l.delta) AS delta_sum, COUNT(*) AS row_count, MAX(l.id) AS through_id \
         FROM inventory_ledger l WHERE l.sku = i.sku) n \
     WHERE i.sku = $1";

/// Every SKU the ledger names that inventory does not hold, with its rows' Σ and count: one
/// `(sku, id)` index probe per distinct SKU (a loose index scan), then only the orphans' rows.
/// The ledger has no foreign key to inventory (migration 0008), so the audits look.
const ORPHAN_LEDGER: &str = "WITH RECURSIVE named(sku) AS ( \
         (SELECT sku FROM inventory_ledger ORDER BY sku LIMIT 1) \
         UNION ALL \
         SELECT (SELECT l.sku FROM inventory_ledger l WHERE l.sku > n.sku ORDER BY l.sku LIMIT 1) \
         FROM named n WHERE n.sku IS NOT NULL) \
     SELECT n.sku::text, SUM(l.delta)::bigint, COUNT(*)::bigint \
     FROM named n JOIN inventory_ledger l ON l.sku = n.sku \
     WHERE NOT EXISTS (SELECT 1 FROM inventory i WHERE i.sku = n.sku) \
     GROUP BY n.sku ORDER BY n.sku";

const ON_CONFLICT: &str = " ON CONFLICT (sku) DO UPDATE SET through_ledger_id = EXCLUDED.through_ledger_id, \
     ledger_delta_sum = EXCLUDED.ledger_delta_sum, ledger_rows = EXCLUDED.ledger_rows, verified_at = now()";

impl PgBackend {
    /// [`ORPHAN_LEDGER`]'s rows (`Backend::orphan_ledger`).
    pub(crate) fn orphan_ledger_rows(&self) -> impl Step<Vec<OrphanLedger>> {
        async move {
            let mut connection = self.connection("looking for ledger rows of missing SKUs").await?;
            let rows: Vec<(String, i64, i64)> = sqlx::query_as(ORPHAN_LEDGER)
                .fetch_all(&mut *connection)
                .await
                .map_err(self.fault("looking for ledger rows of missing SKUs"))?;
            rows.into_iter()
                .map(|(sku, ledger_delta_sum, ledger_rows)| {
                    let sku = SkuId::parse(sku)
                        .map_err(|e| common::corrupt(DeductError::internal("stored sku id is invalid", e)))?;
                    Ok(OrphanLedger {
                        sku,
                        ledger_delta_sum,
                        ledger_rows,
                    })
                })
                .collect()
        }
    }
}

impl AuditCheckpoints for PgBackend {
    fn checkpointed_snapshot(&self) -> impl Step<Vec<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("auditing since the checkpoint").await?;
            let rows = common::checkpointed::<Postgres>(&mut connection, CHECKPOINTED_SNAPSHOT, None)
                .await
                .map_err(self.fault("auditing since the checkpoint"))?;
            common::checkpointed_snapshots(rows)
        }
    }

    fn snapshot_from_start(&self, sku: &SkuId) -> impl Step<Option<CheckpointedSnapshot>> {
        async move {
            let mut connection = self.connection("re-reading a SKU's ledger").await?;
            let rows = common::checkpointed::<Postgres>(&mut connection, SNAPSHOT_FROM_START, Some(sku))
                .await
                .map_err(self.fault("re-reading a SKU's ledger"))?;
            Ok(common::checkpointed_snapshots(rows)?.into_iter().next())
        }
    }

    fn save_checkpoints(&self, checkpoints: &[AuditCheckpoint]) -> impl Step<()> {
        async move {
            let mut connection = self.connection("saving audit checkpoints").await?;
            common::save_checkpoints::<Postgres>(&mut connection, checkpoints, ON_CONFLICT)
                .await
                .map_err(self.fault("saving audit checkpoints"))
        }
    }
}
