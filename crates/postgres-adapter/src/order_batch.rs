//! The coalesced order batch's primitives on PostgreSQL, one statement each: lock every row
//! the batch touches, claim every applied order's id, write every line.

use std::collections::HashMap;

use sqlx::Postgres;
use stockguard_core::SkuId;
use stockguard_core::engine::{Fault, LockedRow, OrderClaim, PlannedLine, Written};

use stockguard_sql as common;

use crate::backend::PgBackend;
use crate::sql;

type PgTx = common::Tx<Postgres>;

impl PgBackend {
    pub(crate) async fn lock_rows_in(
        &self,
        tx: &mut PgTx,
        skus: &[&SkuId],
    ) -> Result<Vec<Option<LockedRow>>, Fault> {
        let ids: Vec<&str> = skus.iter().map(|sku| sku.as_str()).collect();
        let rows: Vec<(String, i64, bool)> = sqlx::query_as(sql::LOCK_ROWS)
            .bind(&ids)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.fault("locking a batch's rows"))?;
        let by_sku: HashMap<String, (i64, bool)> = rows
            .into_iter()
            .map(|(sku, stock, sharded)| (sku, (stock, sharded)))
            .collect();
        common::rows_in_sku_order(self, tx, skus, by_sku).await
    }

    pub(crate) async fn claim_orders_in(
        &self,
        tx: &mut PgTx,
        claims: &[OrderClaim<'_>],
    ) -> Result<(), Fault> {
        let ids: Vec<&str> = claims.iter().map(|c| c.order_id.as_str()).collect();
        let lines: Vec<&str> = claims.iter().map(|c| c.lines).collect();
        let counts: Vec<i32> = claims
            .iter()
            .map(|c| i32::try_from(c.line_count).unwrap_or(i32::MAX))
            .collect();
        sqlx::query(sql::CLAIM_ORDERS)
            .bind(&ids)
            .bind(&lines)
            .bind(&counts)
            .execute(&mut **tx)
            .await
            .map(|_| ())
            .map_err(self.fault("claiming a batch's order ids"))
    }

    pub(crate) async fn write_lines_in(
        &self,
        tx: &mut PgTx,
        lines: &[PlannedLine<'_>],
    ) -> Result<Vec<Written>, Fault> {
        let column = |f: fn(&PlannedLine<'_>) -> i64| lines.iter().map(f).collect::<Vec<i64>>();
        let skus: Vec<&str> = lines.iter().map(|p| p.line.sku.as_str()).collect();
        let references: Vec<&str> = lines.iter().map(|p| p.line.reference).collect();
        let reasons: Vec<&str> = lines
            .iter()
            .map(|p| p.line.reason.ledger_reason().as_str())
            .collect();
        let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(sql::WRITE_LINES)
            .bind(&skus)
            .bind(column(|p| p.line.stock_delta()))
            .bind(column(|p| p.stock_after))
            .bind(&references)
            .bind(&reasons)
            .bind(column(|p| p.line.reserved_delta()))
            .bind(column(|p| p.row_stock_after))
            .fetch_all(&mut **tx)
            .await
            .map_err(self.fault("writing a batch's lines"))?;
        common::written_in_line_order(lines, rows)
    }
}
