//! The order and hold primitives on SQLite: claiming an order's or a hold's id, writing their
//! lines, and reading, locking and resolving holds. One writer at a time holds the database's
//! write lock (`BEGIN IMMEDIATE`), so a plain read inside a write transaction is a locked read
//! and the sweeper has nothing to skip.

use chrono::{DateTime, Utc};
use sqlx::sqlite::{Sqlite, SqliteConnection};
use stockguard_core::engine::{Backend, Fault, LineWrite, StoredHold, StoredHoldRow, StoredOrder, Written};
use stockguard_core::{HoldCheck, HoldId, HoldState, OrderId, SkuId};

use stockguard_sql as common;

use crate::backend::{SqliteBackend, SqliteTx, fault};
use crate::sql;

impl SqliteBackend {
    pub(crate) async fn find_order_on(
        conn: &mut SqliteConnection,
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        let found = common::find_order::<Sqlite>(conn, sql::ORDER_LINES, sql::ORDER_ENTRIES, order_id)
            .await
            .map_err(fault("reading an order"))?;
        common::stored_order(found)
    }

    /// Once the write lock is held, no other write is in progress, so the read is final.
    pub(crate) async fn settle_and_find_order_in(
        &self,
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        let mut tx = self.begin_write().await?;
        let found = Self::find_order_on(&mut tx, order_id).await;
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn claim_order_in(
        &self,
        tx: &mut SqliteTx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> Result<(), Fault> {
        sqlx::query(sql::CLAIM_ORDER)
            .bind(order_id.as_str())
            .bind(lines)
            .bind(i64::try_from(line_count).unwrap_or(i64::MAX))
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(fault("claiming an order id"))
    }

    pub(crate) async fn write_line_in(
        &self,
        tx: &mut SqliteTx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        sqlx::query(sql::SET_ROW_STOCK_RESERVED)
            .bind(line.sku.as_str())
            .bind(row_stock_after)
            .bind(line.reserved_delta())
            .execute(&mut **tx)
            .await
            .map_err(fault("writing the row"))?;
        Self::insert_line(tx, line, stock_after).await
    }

    pub(crate) async fn guarded_line_in(
        &self,
        tx: &mut SqliteTx,
        line: LineWrite<'_>,
    ) -> Result<Option<Written>, Fault> {
        let Some(stock_after) = sqlx::query_scalar::<_, i64>(sql::GUARDED_LINE_UPDATE)
            .bind(line.sku.as_str())
            .bind(line.stock_delta())
            .bind(line.reserved_delta())
            .fetch_optional(&mut **tx)
            .await
            .map_err(fault("writing a line (guarded)"))?
        else {
            return Ok(None);
        };
        Self::insert_line(tx, line, stock_after).await.map(Some)
    }

    async fn insert_line(
        conn: &mut SqliteConnection,
        line: LineWrite<'_>,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        let ledger_id: i64 = sqlx::query_scalar(sql::INSERT_LINE)
            .bind(line.sku.as_str())
            .bind(line.stock_delta())
            .bind(stock_after)
            .bind(line.reason.ledger_reason().as_str())
            .bind(line.reference)
            .fetch_one(&mut *conn)
            .await
            .map_err(fault("writing a line's ledger row"))?;
        Ok(Written {
            ledger_id,
            stock_after,
        })
    }

    pub(crate) async fn claim_hold_in(
        &self,
        tx: &mut SqliteTx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> Result<DateTime<Utc>, Fault> {
        sqlx::query_scalar(sql::CLAIM_HOLD)
            .bind(hold_id.as_str())
            .bind(lines)
            .bind(i64::try_from(line_count).unwrap_or(i64::MAX))
            .bind(i64::from(ttl_s))
            .fetch_one(&mut **tx)
            .await
            .map_err(fault("claiming a hold id"))
    }

    pub(crate) async fn hold_on(
        conn: &mut SqliteConnection,
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        let found = common::find_hold::<Sqlite>(conn, sql::FIND_HOLD, sql::HOLD_ENTRIES, hold_id)
            .await
            .map_err(fault("reading a hold"))?;
        Ok(common::stored_holds(found)?.pop())
    }

    pub(crate) async fn find_hold_in(&self, hold_id: &HoldId) -> Result<Option<StoredHold>, Fault> {
        let mut conn = self.connection("reading a hold").await?;
        Self::hold_on(&mut conn, hold_id).await
    }

    /// As for orders: once the write lock is held, the read is final.
    pub(crate) async fn settle_and_find_hold_in(
        &self,
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        let mut tx = self.begin_write().await?;
        let found = Self::hold_on(&mut tx, hold_id).await;
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn has_due_holds_in(&self, sku: &SkuId) -> Result<bool, Fault> {
        let mut conn = self.connection("looking for due holds").await?;
        sqlx::query_scalar(sql::HAS_DUE_ON)
            .bind(sku.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(fault("looking for due holds"))
    }

    pub(crate) async fn lock_due_holds_in(
        &self,
        tx: &mut SqliteTx,
        sku: Option<&SkuId>,
        limit: u32,
    ) -> Result<Vec<StoredHold>, Fault> {
        let limit = i64::from(limit);
        let rows: Vec<StoredHoldRow> = match sku {
            Some(sku) => sqlx::query_as(sql::LOCK_DUE_ON).bind(sku.as_str()).bind(limit),
            None => sqlx::query_as(sql::LOCK_DUE_ANY).bind(limit),
        }
        .fetch_all(&mut **tx)
        .await
        .map_err(fault("reading due holds"))?;
        let found = common::holds_with_entries::<Sqlite>(tx, rows, sql::HOLD_ENTRIES)
            .await
            .map_err(fault("reading due holds"))?;
        common::stored_holds(found)
    }

    pub(crate) async fn set_hold_state_in(
        &self,
        tx: &mut SqliteTx,
        hold_id: &HoldId,
        state: HoldState,
    ) -> Result<(), Fault> {
        sqlx::query(sql::SET_HOLD_STATE)
            .bind(hold_id.as_str())
            .bind(state.as_str())
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(fault("resolving a hold"))
    }

    pub(crate) async fn hold_check_in(&self) -> Result<HoldCheck, Fault> {
        let mut conn = self.connection("checking holds").await?;
        common::hold_check::<Sqlite>(&mut conn, sql::HOLD_ROWS, sql::RESERVED_MISMATCHES)
            .await
            .map_err(fault("checking holds"))
    }
}
