//! The self-contained single-SKU writes on MySQL/MariaDB, each inside its own short
//! transaction: `Guarded`'s conditional decrement, a restock, and `Optimistic`'s
//! compare-and-set. Each is an `UPDATE`, a read-back under the lock it took, and the ledger row.

use stockguard_core::engine::{Backend, Change, Fault, VersionedRow, Written};
use stockguard_core::{LedgerReason, STOCK_MAX};

use crate::backend::{MySqlBackend, MySqlTx};
use crate::sql;

impl MySqlBackend {
    /// Commits a self-contained write on success; rolls back explicitly on failure. On a lock
    /// wait timeout (1205) InnoDB undoes only the failed statement, not the transaction: its
    /// earlier writes and row locks would stay until the connection's next use.
    pub(crate) async fn finish<T>(
        &self,
        tx: MySqlTx,
        outcome: Result<Option<T>, Fault>,
    ) -> Result<Option<T>, Fault> {
        match outcome {
            Ok(Some(value)) => {
                tx.commit().await.map_err(self.fault("committing"))?;
                Ok(Some(value))
            }
            Ok(None) => {
                self.rollback(tx).await;
                Ok(None)
            }
            Err(fault) => {
                self.rollback(tx).await;
                Err(fault)
            }
        }
    }

    pub(crate) async fn guarded_in(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
    ) -> Result<Option<Written>, Fault> {
        let quantity = change.quantity.get();
        let updated = sqlx::query(sql::GUARDED_UPDATE)
            .bind(quantity)
            .bind(change.sku.as_str())
            .bind(quantity)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("deducting (guarded)"))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let stock_after = self.read_back(tx, change.sku).await?;
        self.insert_ledger(tx, change, LedgerReason::Deduct, stock_after)
            .await
            .map(Some)
    }

    pub(crate) async fn restock_in(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
    ) -> Result<Option<Written>, Fault> {
        let quantity = change.quantity.get();
        let updated = sqlx::query(sql::RESTOCK_UPDATE)
            .bind(quantity)
            .bind(change.sku.as_str())
            .bind(change.sku.as_str())
            .bind(STOCK_MAX)
            .bind(quantity)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("restocking"))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let stock_after = self.read_back(tx, change.sku).await?;
        self.insert_ledger(tx, change, LedgerReason::Restock, stock_after)
            .await
            .map(Some)
    }

    pub(crate) async fn compare_and_set_in(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
        read: VersionedRow,
        row_stock_after: i64,
    ) -> Result<Option<Written>, Fault> {
        let updated = sqlx::query(sql::COMPARE_AND_SET)
            .bind(row_stock_after)
            .bind(change.sku.as_str())
            .bind(read.version)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("compare-and-set"))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        // The version matched, so `sharded` (read with it) is current: spreading bumps it.
        let stock_after = row_stock_after + self.bucket_stock_if(tx, change.sku, read.sharded).await?;
        self.insert_ledger(tx, change, LedgerReason::Deduct, stock_after)
            .await
            .map(Some)
    }
}
