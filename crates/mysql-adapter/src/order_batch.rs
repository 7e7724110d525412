//! The coalesced order batch's primitives on MySQL/MariaDB, in the fewest statements that
//! keep the transaction's locks: one `SELECT … FOR UPDATE` for every row (InnoDB takes the
//! locks in primary-key order, which under `utf8mb4_bin` is the canonical byte order), one
//! multi-row claim, one `UPDATE` setting every row by `CASE`, one multi-row ledger insert
//! (read back with `RETURNING` on MariaDB, by reference on MySQL). Each is split at
//! `ROWS_PER_STATEMENT_MAX` rows.

use std::collections::{BTreeMap, HashMap};

use sqlx::{MySql, QueryBuilder};
use stockguard_core::SkuId;
use stockguard_core::engine::{Fault, LockedRow, OrderClaim, PlannedLine, Written};

use stockguard_sql as common;

use crate::backend::{MySqlBackend, MySqlTx, ROWS_PER_STATEMENT_MAX};
use crate::config::ServerFlavor;

impl MySqlBackend {
    pub(crate) async fn lock_rows_in(
        &self,
        tx: &mut MySqlTx,
        skus: &[&SkuId],
    ) -> Result<Vec<Option<LockedRow>>, Fault> {
        let mut by_sku: HashMap<String, (i64, bool)> = HashMap::with_capacity(skus.len());
        // Chunks in canonical order, each locked in canonical order: the whole is too.
        for chunk in skus.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut select =
                QueryBuilder::<MySql>::new("SELECT sku, stock, sharded FROM inventory WHERE sku IN (");
            let mut list = select.separated(", ");
            for sku in chunk {
                list.push_bind(sku.as_str());
            }
            select.push(") ORDER BY sku FOR UPDATE");
            let rows: Vec<(String, i64, bool)> = select
                .build_query_as()
                .fetch_all(&mut **tx)
                .await
                .map_err(self.fault("locking a batch's rows"))?;
            by_sku.extend(
                rows.into_iter()
                    .map(|(sku, stock, sharded)| (sku, (stock, sharded))),
            );
        }
        common::rows_in_sku_order(self, tx, skus, by_sku).await
    }

    pub(crate) async fn claim_orders_in(
        &self,
        tx: &mut MySqlTx,
        claims: &[OrderClaim<'_>],
    ) -> Result<(), Fault> {
        for chunk in claims.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut insert =
                QueryBuilder::<MySql>::new("INSERT INTO inventory_order (order_id, `lines`, line_count) ");
            insert.push_values(chunk, |mut row, claim| {
                row.push_bind(claim.order_id.as_str())
                    .push_bind(claim.lines)
                    .push_bind(i64::try_from(claim.line_count).unwrap_or(i64::MAX));
            });
            insert
                .build()
                .execute(&mut **tx)
                .await
                .map_err(self.fault("claiming a batch's order ids"))?;
        }
        Ok(())
    }

    pub(crate) async fn write_lines_in(
        &self,
        tx: &mut MySqlTx,
        lines: &[PlannedLine<'_>],
    ) -> Result<Vec<Written>, Fault> {
        // Each row's last stock and its summed reserved change, in canonical order.
        let mut rows: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
        for planned in lines {
            let row = rows.entry(planned.line.sku.as_str()).or_insert((0, 0));
            row.0 = planned.row_stock_after;
            row.1 += planned.line.reserved_delta();
        }
        let rows: Vec<(&str, (i64, i64))> = rows.into_iter().collect();
        for chunk in rows.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut update = QueryBuilder::<MySql>::new("UPDATE inventory SET stock = CASE sku");
            for (sku, (stock, _)) in chunk {
                update
                    .push(" WHEN ")
                    .push_bind(*sku)
                    .push(" THEN ")
                    .push_bind(*stock);
            }
            update.push(" END, reserved = reserved + CASE sku");
            for (sku, (_, reserved)) in chunk {
                update
                    .push(" WHEN ")
                    .push_bind(*sku)
                    .push(" THEN ")
                    .push_bind(*reserved);
            }
            update.push(" END, version = version + 1 WHERE sku IN (");
            let mut list = update.separated(", ");
            for (sku, _) in chunk {
                list.push_bind(*sku);
            }
            update.push(")");
            update
                .build()
                .execute(&mut **tx)
                .await
                .map_err(self.fault("writing a batch's rows"))?;
        }
        let mut returned: Vec<(i64, String, String, i64)> = Vec::with_capacity(lines.len());
        for chunk in lines.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) ",
            );
            insert.push_values(chunk, |mut row, planned| {
                row.push_bind(planned.line.sku.as_str())
                    .push_bind(planned.line.stock_delta())
                    .push_bind(planned.stock_after)
                    .push_bind(planned.line.reason.ledger_reason().as_str())
                    .push_bind(planned.line.reference);
            });
            if self.flavor == ServerFlavor::MariaDb {
                insert.push(" RETURNING id, reference, sku, stock_after");
                returned.extend(
                    insert
                        .build_query_as::<(i64, String, String, i64)>()
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(self.fault("writing a batch's lines"))?,
                );
            } else {
                insert
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(self.fault("writing a batch's lines"))?;
                returned.extend(self.lines_written(tx, chunk).await?);
            }
        }
        common::written_in_line_order(lines, returned)
    }

    /// MySQL has no `RETURNING`: the rows just inserted, found by reason and reference (this
    /// transaction holds every reference's claim, so no other row has them).
    async fn lines_written(
        &self,
        tx: &mut MySqlTx,
        lines: &[PlannedLine<'_>],
    ) -> Result<Vec<(i64, String, String, i64)>, Fault> {
        let mut select = QueryBuilder::<MySql>::new(
            "SELECT id, reference, sku, stock_after FROM inventory_ledger WHERE reason = ",
        );
        select.push_bind(lines[0].line.reason.ledger_reason().as_str());
        select.push(" AND reference IN (");
        let mut list = select.separated(", ");
        for planned in lines {
            list.push_bind(planned.line.reference);
        }
        select.push(")");
        select
            .build_query_as()
            .fetch_all(&mut **tx)
            .await
            .map_err(self.fault("reading a batch's lines back"))
    }
}
