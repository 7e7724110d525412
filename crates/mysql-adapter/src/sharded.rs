//! The `Sharded` primitives and the batch write on MySQL/MariaDB: the statements that touch
//! many rows at once.
//!
//! A `Sharded` deduction holds one bucket and then, through the ledger insert's foreign-key
//! check, a shared lock on the SKU row; so the paths that lock every bucket (spreading,
//! gathering) take the buckets before the row.

use sqlx::{MySql, QueryBuilder};
use stockguard_core::engine::{AllLocked, Change, Fault, Written};
use stockguard_core::{BatchPlan, LedgerReason, SkuId};

use crate::backend::{MySqlBackend, MySqlTx, ROWS_PER_STATEMENT_MAX};
use crate::config::ServerFlavor;
use crate::sql;

impl MySqlBackend {
    /// Takes the request from the row of an unsharded SKU that no one holds, or from one
    /// bucket of a sharded SKU. `None` (nothing written) sends the engine to the consistent
    /// path: no bucket has room, the SKU is missing or short, or an unsharded SKU's row is
    /// busy, which is the signal to spread it (or `spread_eagerly` is set).
    pub(crate) async fn take_from_bucket_in(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
        spread_eagerly: bool,
    ) -> Result<Option<Written>, Fault> {
        let sku = change.sku.as_str();
        let requested = change.quantity.get();
        let state: Option<(i64, bool, i64)> = sqlx::query_as(sql::SHARD_STATE)
            .bind(sku)
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.fault("reading the sku's shard state"))?;
        let Some((_, sharded, _)) = state else {
            return Ok(None);
        };
        if !sharded {
            if spread_eagerly {
                return Ok(None);
            }
            let free_row: Option<(i64, bool)> = sqlx::query_as(sql::FREE_ROW)
                .bind(sku)
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("taking the free row"))?;
            return match free_row {
                // Busy, spread since the plain read, or short: the consistent path decides.
                None | Some((_, true)) => Ok(None),
                Some((row_stock, false)) if row_stock < requested => Ok(None),
                Some((row_stock, false)) => {
                    let remaining = row_stock - requested;
                    sqlx::query(sql::SET_ROW_STOCK)
                        .bind(remaining)
                        .bind(sku)
                        .execute(&mut **tx)
                        .await
                        .map_err(self.fault("taking from the row"))?;
                    self.insert_ledger(tx, change, LedgerReason::Deduct, remaining)
                        .await
                        .map(Some)
                }
            };
        }
        // Sharded: no lock on the SKU row here (see the module docs).
        let start = i64::from(rand::random_range(0..self.config.engine.shard_buckets));
        let mut chosen: Option<i64> = None;
        for range in [sql::FREE_BUCKET_FROM, sql::FREE_BUCKET_BEFORE] {
            chosen = sqlx::query_scalar(range)
                .bind(sku)
                .bind(start)
                .bind(requested)
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("picking a free bucket"))?;
            if chosen.is_some() {
                break;
            }
        }
        let bucket = match chosen {
            Some(bucket) => Some(bucket),
            None => sqlx::query_scalar(sql::ANY_BUCKET_WITH_ROOM)
                .bind(sku)
                .bind(requested)
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("picking a bucket"))?,
        };
        let Some(bucket) = bucket else {
            return Ok(None);
        };
        let taken = sqlx::query(sql::TAKE_FROM_BUCKET)
            .bind(requested)
            .bind(sku)
            .bind(bucket)
            .bind(requested)
            .execute(&mut **tx)
            .await
            .map_err(self.fault("taking from a bucket"))?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        // The snapshot's total less this deduction: other deductions may be in flight, so an
        // estimate (see `Strategy::Sharded`).
        let (row_stock, _, bucket_stock) = state.unwrap_or_default();
        let remaining = (row_stock + bucket_stock - requested).max(0);
        self.insert_ledger(tx, change, LedgerReason::Deduct, remaining)
            .await
            .map(Some)
    }

    /// Locks every bucket of the SKU in bucket order, then its row. Buckets are created only
    /// under the row's lock; if some appeared between the two steps (another transaction
    /// spread the SKU meanwhile), the caller takes the locks again rather than wait for them
    /// while holding the row.
    pub(crate) async fn lock_all_in(&self, tx: &mut MySqlTx, sku: &SkuId) -> Result<AllLocked, Fault> {
        let buckets: Vec<(i64, i64)> = sqlx::query_as(sql::LOCK_ALL_BUCKETS)
            .bind(sku.as_str())
            .fetch_all(&mut **tx)
            .await
            .map_err(self.fault("locking the buckets"))?;
        let row: Option<(i64, i64)> = sqlx::query_as(sql::LOCK_ALL_ROW)
            .bind(sku.as_str())
            .fetch_optional(&mut **tx)
            .await
            .map_err(self.fault("locking the sku row"))?;
        Ok(match row {
            None => AllLocked::Missing,
            Some((_, bucket_rows)) if usize::try_from(bucket_rows).ok() != Some(buckets.len()) => {
                AllLocked::Changed
            }
            Some((row_stock, _)) => AllLocked::Locked { row_stock, buckets },
        })
    }

    pub(crate) async fn write_spread_in(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
        buckets: &[(i64, i64)],
        stock_after: i64,
    ) -> Result<Written, Fault> {
        for chunk in buckets.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut upsert = QueryBuilder::<MySql>::new("INSERT INTO inventory_bucket (sku, bucket, stock) ");
            upsert.push_values(chunk, |mut row, (bucket, stock)| {
                row.push_bind(change.sku.as_str())
                    .push_bind(*bucket)
                    .push_bind(*stock);
            });
            // `VALUES()` here is deprecated on MySQL since 8.0.20, which has the row alias.
            upsert.push(match self.flavor {
                ServerFlavor::MariaDb => " ON DUPLICATE KEY UPDATE stock = VALUES(stock)",
                ServerFlavor::MySql => " AS spread ON DUPLICATE KEY UPDATE stock = spread.stock",
            });
            upsert
                .build()
                .execute(&mut **tx)
                .await
                .map_err(self.fault("spreading a sku"))?;
        }
        sqlx::query(sql::EMPTY_ROW_AND_MARK_SHARDED)
            .bind(change.sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("emptying the row"))?;
        self.insert_ledger(tx, change, LedgerReason::Deduct, stock_after)
            .await
    }

    pub(crate) async fn write_gather_in(
        &self,
        tx: &mut MySqlTx,
        sku: &SkuId,
        bucket_stock: i64,
    ) -> Result<(), Fault> {
        sqlx::query(sql::EMPTY_BUCKETS)
            .bind(sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("emptying the buckets"))?;
        sqlx::query(sql::ADD_TO_ROW)
            .bind(bucket_stock)
            .bind(sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("gathering into the row"))?;
        Ok(())
    }

    /// Writes a planned batch on the locked row. Ids come back by key: MariaDB returns them
    /// from the `INSERT` itself; MySQL 8 (no `INSERT … RETURNING`) reads them back by key.
    /// Neither assumes consecutive ids, which `innodb_autoinc_lock_mode = 2` (MySQL 8's
    /// default, and Galera's) does not give.
    pub(crate) async fn write_batch_in(
        &self,
        tx: &mut MySqlTx,
        sku: &SkuId,
        plan: &BatchPlan,
    ) -> Result<Vec<i64>, Fault> {
        sqlx::query(sql::SET_ROW_STOCK)
            .bind(plan.stock_after)
            .bind(sku.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing the batch's stock"))?;
        let mut ids_by_key: Vec<(i64, String)> = Vec::with_capacity(plan.new_rows.len());
        for chunk in plan.new_rows.chunks(ROWS_PER_STATEMENT_MAX) {
            let mut insert = QueryBuilder::<MySql>::new(
                "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) ",
            );
            insert.push_values(chunk, |mut row, new| {
                row.push_bind(sku.as_str())
                    .push_bind(-new.quantity)
                    .push_bind(new.stock_after)
                    .push_bind(LedgerReason::Deduct.as_str())
                    .push_bind(new.idempotency_key.as_str());
            });
            if self.flavor == ServerFlavor::MariaDb {
                insert.push(" RETURNING id, idempotency_key");
                ids_by_key.extend(
                    insert
                        .build_query_as::<(i64, String)>()
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(self.fault("writing a batch"))?,
                );
            } else {
                insert
                    .build()
                    .execute(&mut **tx)
                    .await
                    .map_err(self.fault("writing a batch"))?;
            }
        }
        if self.flavor == ServerFlavor::MySql {
            ids_by_key = self
                .find_keys_on(tx, &plan.new_keys())
                .await?
                .into_iter()
                .filter_map(|entry| entry.idempotency_key.map(|key| (entry.id, key)))
                .collect();
        }
        Ok(stockguard_sql::ids_in_key_order(plan.new_keys(), &ids_by_key))
    }
}
