//! The coalesced batch's writes on PostgreSQL: on the row the engine locked, and alone (one
//! autocommit statement that applies the whole batch only if the row covers it).

use sqlx::postgres::Postgres;
use stockguard_core::engine::{Fault, FaultKind};
use stockguard_core::{BatchPlan, IdempotencyKey, SkuId};
use stockguard_sql as common;

use crate::backend::PgBackend;
use crate::sql;

type PgTx = common::Tx<Postgres>;

impl PgBackend {
    /// The planned batch on the locked row: its stock and ledger rows in one statement.
    pub(crate) async fn write_batch_in(
        &self,
        tx: &mut PgTx,
        sku: &SkuId,
        plan: &BatchPlan,
    ) -> Result<Vec<i64>, Fault> {
        let quantities: Vec<i64> = plan.new_rows.iter().map(|r| r.quantity).collect();
        let stock_afters: Vec<i64> = plan.new_rows.iter().map(|r| r.stock_after).collect();
        let keys: Vec<&str> = plan.new_rows.iter().map(|r| r.idempotency_key.as_str()).collect();
        let rows: Vec<(i64, String)> = sqlx::query_as(sql::WRITE_BATCH)
            .bind(sku.as_str())
            .bind(plan.stock_after)
            .bind(&quantities)
            .bind(&stock_afters)
            .bind(&keys)
            .fetch_all(&mut **tx)
            .await
            .map_err(self.fault("writing a batch"))?;
        // Ids by key: RETURNING's order is not guaranteed.
        Ok(common::ids_in_key_order(plan.new_keys(), &rows))
    }

    /// The whole batch as one autocommit statement (`WRITE_BATCH_ALONE`): `(id, stock
    /// after)` per request in `rows` order, or `None` when the row does not cover it.
    pub(crate) async fn write_batch_alone_in(
        &self,
        sku: &SkuId,
        rows: &[(i64, &IdempotencyKey)],
    ) -> Result<Option<Vec<(i64, i64)>>, Fault> {
        let quantities: Vec<i64> = rows.iter().map(|(units, _)| *units).collect();
        let upto: Vec<i64> = quantities
            .iter()
            .scan(0i64, |sum, units| {
                *sum += units;
                Some(*sum)
            })
            .collect();
        let total = upto.last().copied().unwrap_or(0);
        let keys: Vec<&str> = rows.iter().map(|(_, key)| key.as_str()).collect();
        let written: Vec<(i64, i64, String)> = sqlx::query_as(sql::WRITE_BATCH_ALONE)
            .bind(sku.as_str())
            .bind(total)
            .bind(&quantities)
            .bind(&upto)
            .bind(&keys)
            .fetch_all(&mut *self.connection("writing a batch alone").await?)
            .await
            .map_err(self.fault("writing a batch alone"))?;
        if written.is_empty() {
            return Ok(None);
        }
        // By key: RETURNING's order is not guaranteed (it is the insert order in
        // practice, so the first guess is the same position).
        let by_key = keys
            .iter()
            .enumerate()
            .map(|(index, key)| {
                let found = match written.get(index) {
                    Some((id, after, k)) if k == key => Some((*id, *after)),
                    _ => written
                        .iter()
                        .find(|(_, _, k)| k == key)
                        .map(|(id, after, _)| (*id, *after)),
                };
                found.ok_or_else(|| Fault::bare(FaultKind::Other, "a batch row came back without its key"))
            })
            .collect::<Result<Vec<_>, Fault>>()?;
        Ok(Some(by_key))
    }
}
