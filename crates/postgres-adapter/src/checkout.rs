//! The order and hold primitives on PostgreSQL: claiming an order's or a hold's id, writing
//! their lines, and reading, locking and resolving holds.

use chrono::{DateTime, Utc};
use sqlx::Postgres;
use stockguard_core::engine::{Backend, Fault, LineWrite, StoredHold, StoredHoldRow, StoredOrder, Written};
use stockguard_core::{HoldCheck, HoldId, HoldState, OrderId, SkuId};

use stockguard_sql as common;

use crate::backend::{PgBackend, written};
use crate::sql;

type PgTx = common::Tx<Postgres>;

impl PgBackend {
    pub(crate) async fn find_order_on(
        &self,
        connection: &mut sqlx::PgConnection,
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        let found =
            common::find_order::<Postgres>(connection, sql::ORDER_LINES, sql::ORDER_ENTRIES, order_id)
                .await
                .map_err(self.fault("reading an order"))?;
        common::stored_order(found)
    }

    /// Share locks on `skus`' rows, in the order given (canonical), waiting out their writers.
    async fn settle_rows(&self, tx: &mut PgTx, skus: &[&SkuId]) -> Result<(), Fault> {
        for sku in skus {
            sqlx::query(sql::SETTLE_ROW)
                .bind(sku.as_str())
                .execute(&mut **tx)
                .await
                .map_err(self.fault("waiting out the lost transaction's locks"))?;
        }
        Ok(())
    }

    pub(crate) async fn settle_and_find_order_in(
        &self,
        skus: &[&SkuId],
        order_id: &OrderId,
    ) -> Result<Option<StoredOrder>, Fault> {
        let mut tx = common::Tx::begin(&self.pool, "BEGIN")
            .await
            .map_err(self.fault("resolving a lost answer"))?;
        let found = match self.settle_rows(&mut tx, skus).await {
            Ok(()) => self.find_order_on(&mut tx, order_id).await,
            Err(fault) => Err(fault),
        };
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn claim_order_in(
        &self,
        tx: &mut PgTx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> Result<(), Fault> {
        sqlx::query(sql::CLAIM_ORDER)
            .bind(order_id.as_str())
            .bind(lines)
            .bind(i32::try_from(line_count).unwrap_or(i32::MAX))
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(self.fault("claiming an order id"))
    }

    pub(crate) async fn write_line_in(
        &self,
        tx: &mut PgTx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        let row: (i64, i64) = sqlx::query_as(sql::WRITE_LINE)
            .bind(line.sku.as_str())
            .bind(row_stock_after)
            .bind(line.stock_delta())
            .bind(stock_after)
            .bind(line.reference)
            .bind(line.reserved_delta())
            .bind(line.reason.ledger_reason().as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.fault("writing a line"))?;
        Ok(written(row))
    }

    pub(crate) async fn guarded_line_in(
        &self,
        tx: &mut PgTx,
        line: LineWrite<'_>,
    ) -> Result<Option<Written>, Fault> {
        let row: Option<(i64, i64)> = sqlx::query_as(sql::GUARDED_LINE)
            .bind(line.sku.as_str())
            .bind(line.stock_delta())
            .bind(line.reference)
            .bind(line.reserved_delta())
            .bind(line.reason.ledger_reason().as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.fault("writing a line (guarded)"))?;
        Ok(row.map(written))
    }

    pub(crate) async fn claim_hold_in(
        &self,
        tx: &mut PgTx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> Result<DateTime<Utc>, Fault> {
        sqlx::query_scalar(sql::CLAIM_HOLD)
            .bind(hold_id.as_str())
            .bind(lines)
            .bind(i32::try_from(line_count).unwrap_or(i32::MAX))
            .bind(f64::from(ttl_s))
            .fetch_one(&mut **tx)
            .await
            .map_err(self.fault("claiming a hold id"))
    }

    /// The hold read (or locked) by `statement`, with its ledger rows.
    pub(crate) async fn hold_on(
        &self,
        connection: &mut sqlx::PgConnection,
        statement: &'static str,
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        let found = common::find_hold::<Postgres>(connection, statement, sql::HOLD_ENTRIES, hold_id)
            .await
            .map_err(self.fault("reading a hold"))?;
        Ok(common::stored_holds(found)?.pop())
    }

    pub(crate) async fn find_hold_in(&self, hold_id: &HoldId) -> Result<Option<StoredHold>, Fault> {
        let mut connection = self.connection("reading a hold").await?;
        self.hold_on(&mut connection, sql::FIND_HOLD, hold_id).await
    }

    pub(crate) async fn settle_and_find_hold_in(
        &self,
        skus: &[&SkuId],
        hold_id: &HoldId,
    ) -> Result<Option<StoredHold>, Fault> {
        let mut tx = common::Tx::begin(&self.pool, "BEGIN")
            .await
            .map_err(self.fault("resolving a lost answer"))?;
        // The hold's row first, then its SKUs: the order every hold change takes them in.
        let settled = sqlx::query(sql::SETTLE_HOLD)
            .bind(hold_id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(self.fault("waiting out the lost transaction's locks"));
        let found = match settled {
            Ok(_) => match self.settle_rows(&mut tx, skus).await {
                Ok(()) => self.hold_on(&mut tx, sql::FIND_HOLD, hold_id).await,
                Err(fault) => Err(fault),
            },
            Err(fault) => Err(fault),
        };
        self.rollback(tx).await;
        found
    }

    pub(crate) async fn has_due_holds_in(&self, sku: &SkuId) -> Result<bool, Fault> {
        let mut connection = self.connection("looking for due holds").await?;
        sqlx::query_scalar(sql::HAS_DUE_ON)
            .bind(sku.as_str())
            .fetch_one(&mut *connection)
            .await
            .map_err(self.fault("looking for due holds"))
    }

    pub(crate) async fn lock_due_holds_in(
        &self,
        tx: &mut PgTx,
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
        .map_err(self.fault("locking due holds"))?;
        let found = common::holds_with_entries::<Postgres>(tx, rows, sql::HOLD_ENTRIES)
            .await
            .map_err(self.fault("reading due holds"))?;
        common::stored_holds(found)
    }

    pub(crate) async fn set_hold_state_in(
        &self,
        tx: &mut PgTx,
        hold_id: &HoldId,
        state: HoldState,
    ) -> Result<(), Fault> {
        sqlx::query(sql::SET_HOLD_STATE)
            .bind(hold_id.as_str())
            .bind(state.as_str())
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(self.fault("resolving a hold"))
    }

    pub(crate) async fn hold_check_in(&self) -> Result<HoldCheck, Fault> {
        let mut connection = self.connection("checking holds").await?;
        common::hold_check::<Postgres>(&mut connection, sql::HOLD_ROWS, sql::RESERVED_MISMATCHES)
            .await
            .map_err(self.fault("checking holds"))
    }
}
