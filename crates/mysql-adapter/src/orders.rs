//! The order and adjustment primitives on MySQL/MariaDB: claiming an order id, writing its
//! lines (an order's or a hold's), and writing an adjustment.
//!
//! An order locks its lines' rows in canonical SKU order. Where a line's SKU is `Sharded`
//! and its row is short, the engine gathers its buckets inside the order's transaction,
//! taking the buckets after the row; the paths that lock every bucket here take them before
//! the row (see `sharded.rs`), so such an order can deadlock with them. The database breaks
//! it, and the engine retries the order inside its deadline.

use sqlx::MySql;
use stockguard_core::engine::{AdjustWrite, Backend, Fault, FaultKind, LineWrite, StoredOrder, Written};
use stockguard_core::{OrderId, SkuId};

use stockguard_sql as common;

use crate::backend::{MySqlBackend, MySqlTx};
use crate::sql;

impl MySqlBackend {
    pub(crate) async fn find_order_on(
        &self,
        connection: &mut sqlx::MySqlConnection,
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        let found = common::find_order::<MySql>(connection, sql::ORDER_LINES, sql::ORDER_ENTRIES, order_id)
            .await
            .map_err(self.fault("reading an order"))?;
        common::stored_order(found)
    }

    /// Waits out whatever holds any of `skus`' rows, in canonical order, then reads the order.
    pub(crate) async fn settle_and_find_order_in(
        &self,
        skus: &[&SkuId],
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        self.wait_for_cluster("resolving a lost answer").await?;
        let mut tx = common::Tx::begin(&self.pool, "BEGIN")
            .await
            .map_err(self.fault("resolving a lost answer"))?;
        for sku in skus {
            if let Err(error) = sqlx::query(sql::SETTLE_ROW)
                .bind(sku.as_str())
                .execute(&mut *tx)
                .await
            {
                self.rollback(tx).await;
                return Err(self.fault("waiting out the lost transaction's locks")(error));
            }
        }
        let found = self.find_order_on(&mut tx, order_id).await;
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn claim_order_in(
        &self,
        tx: &mut MySqlTx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> Result<(), Fault> {
        sqlx::query(sql::CLAIM_ORDER)
            .bind(order_id.as_str())
            .bind(lines)
            .bind(u32::try_from(line_count).unwrap_or(u32::MAX))
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(self.fault("claiming an order id"))
    }

    /// Sets the locked row (and moves `reserved`) and writes the line's ledger row.
    pub(crate) async fn write_line_in(
        &self,
        tx: &mut MySqlTx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        sqlx::query(sql::SET_ROW_STOCK_RESERVED)
            .bind(row_stock_after)
            .bind(line.reserved_delta())
            .bind(line.sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing the locked row"))?;
        self.insert_line(tx, line, stock_after).await
    }

    /// `Guarded`'s conditional write for one line of an order or a hold.
    pub(crate) async fn guarded_line_in(
        &self,
        tx: &mut MySqlTx,
        line: LineWrite<'_>,
    ) -> Result<Option<Written>, Fault> {
        let updated = sqlx::query(sql::GUARDED_LINE_UPDATE)
            .bind(line.stock_delta())
            .bind(line.reserved_delta())
            .bind(line.sku.as_str())
            .bind(line.stock_delta())
            .bind(line.reserved_delta())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing a line (guarded)"))?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let stock_after = self.read_back(tx, line.sku).await?;
        self.insert_line(tx, line, stock_after).await.map(Some)
    }

    async fn insert_line(
        &self,
        tx: &mut MySqlTx,
        line: LineWrite<'_>,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        let done = sqlx::query(sql::INSERT_LINE)
            .bind(line.sku.as_str())
            .bind(line.stock_delta())
            .bind(stock_after)
            .bind(line.reason.ledger_reason().as_str())
            .bind(line.reference)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing a line's ledger row"))?;
        let ledger_id = i64::try_from(done.last_insert_id())
            .map_err(|e| Fault::new(FaultKind::Other, "ledger id does not fit in BIGINT", e))?;
        Ok(Written {
            ledger_id,
            stock_after,
        })
    }

    /// Sets the locked row and writes the adjustment's ledger row.
    pub(crate) async fn write_adjustment_in(
        &self,
        tx: &mut MySqlTx,
        adjustment: AdjustWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        sqlx::query(sql::SET_ROW_STOCK)
            .bind(row_stock_after)
            .bind(adjustment.sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing the locked row"))?;
        let done = sqlx::query(sql::INSERT_ADJUSTMENT)
            .bind(adjustment.sku.as_str())
            .bind(adjustment.delta)
            .bind(stock_after)
            .bind(adjustment.key.as_str())
            .bind(adjustment.reference)
            .bind(adjustment.kind.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing an adjustment"))?;
        let ledger_id = i64::try_from(done.last_insert_id())
            .map_err(|e| Fault::new(FaultKind::Other, "ledger id does not fit in BIGINT", e))?;
        Ok(Written {
            ledger_id,
            stock_after,
        })
    }
}
