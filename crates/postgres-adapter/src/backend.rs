//! The engine's primitives on PostgreSQL: each one a statement (or a few) from `sql.rs`.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, Postgres};
use stockguard_core::engine::{
    AdjustWrite, AllLocked, Backend, Change, Fault, LineWrite, LockWait, LockedRow, MissFacts, OrderClaim,
    PlannedLine, PoolWaitStats, Step, StoredHold, StoredOrder, VersionedRow, Written,
};
use stockguard_core::{
    BatchPlan, Capabilities, DeductError, EngineConfig, HoldCheck, HoldId, HoldState, IdempotencyKey,
    LedgerEntry, LedgerPage, LockFeature, OrderCheck, OrderId, OrphanLedger, PoolStatus, STOCK_MAX,
    ServerProbe, SkuId, SkuSnapshot, StockLevel, Strategy,
};

use stockguard_sql as common;

use crate::{MIGRATOR, PgConfig, error, sql};

/// Keys per `IN (…)` lookup.
const KEYS_PER_LOOKUP: usize = 1_000;

/// The PostgreSQL side of a [`crate::PgStore`]: a pool and the adapter's settings.
#[derive(Debug)]
pub struct PgBackend {
    pub(crate) pool: common::TimedPool<Postgres>,
    config: PgConfig,
}

pub(crate) fn written((ledger_id, stock_after): (i64, i64)) -> Written {
    Written {
        ledger_id,
        stock_after,
    }
}

impl PgBackend {
    async fn find_keys_on(
        &self,
        connection: &mut sqlx::PgConnection,
        keys: &[&IdempotencyKey],
    ) -> Result<Vec<LedgerEntry>, Fault> {
        let rows = common::find_keys::<Postgres>(connection, sql::FIND_KEYS, keys, KEYS_PER_LOOKUP)
            .await
            .map_err(self.fault("looking up keys"))?;
        common::entries(rows)
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &PgPool {
        self.pool.inner()
    }

    /// A pooled connection for one autocommit statement, its wait timed.
    pub(crate) async fn connection(&self, context: &'static str) -> Result<PoolConnection<Postgres>, Fault> {
        self.pool.acquire().await.map_err(self.fault(context))
    }

    pub(crate) fn fault(&self, context: &'static str) -> impl FnOnce(sqlx::Error) -> Fault + '_ {
        move |e| error::fault(e, context, self.pool.size() < self.config.max_connections)
    }
}

impl Backend for PgBackend {
    type Config = PgConfig;
    type Tx = common::Tx<Postgres>;

    async fn open(config: PgConfig) -> Result<Self, DeductError> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| DeductError::internal("parsing the PostgreSQL URL", e))?
            .options([
                (
                    "lock_timeout",
                    format!("{}ms", crate::config::millis(config.lock_timeout)),
                ),
                (
                    "statement_timeout",
                    format!("{}ms", crate::config::millis(config.statement_timeout)),
                ),
                (
                    "idle_in_transaction_session_timeout",
                    format!("{}ms", crate::config::millis(config.idle_in_transaction_timeout)),
                ),
                // JIT compiles any plan estimated above `jit_above_cost`. No statement here
                // needs it, and the incremental audit's per-SKU index ranges are estimated
                // high: 230 ms of compilation for 13 ms of work at 1M ledger rows.
                ("jit", "off".to_owned()),
            ]);
        // One direct connection first: the pool would turn "refused", "no such host" or
        // "wrong password" into a pool timeout, and the operator needs the real cause.
        let probe = sqlx::PgConnection::connect_with(&options)
            .await
            .map_err(|e| error::fault(e, "connecting to PostgreSQL", false).into_error())?;
        let _ = probe.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Self {
            pool: common::TimedPool::new(pool),
            config,
        })
    }

    fn engine_config(config: &PgConfig) -> EngineConfig {
        config.engine
    }

    async fn migrate(&self) -> Result<(), DeductError> {
        MIGRATOR
            .run(self.pool.inner())
            .await
            .map_err(|e| DeductError::internal("running migrations", e))
    }

    fn name(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            strategies: Strategy::ALL.to_vec(),
            row_level_locking: true,
        }
    }

    fn probe(&self) -> impl Future<Output = Result<ServerProbe, DeductError>> + Send {
        self.probe_server()
    }

    fn lock_features(&self, strategy: Strategy) -> &'static [LockFeature] {
        Self::clauses_of(strategy)
    }

    fn pool_status(&self) -> PoolStatus {
        self.pool.status(self.config.max_connections)
    }

    fn pool_wait(&self) -> &PoolWaitStats {
        self.pool.wait()
    }

    async fn close(&self) {
        self.pool.close().await;
    }

    fn ping(&self) -> impl Step<()> {
        async move {
            let mut connection = self.connection("pinging PostgreSQL").await?;
            common::execute(&mut *connection, sql::PING)
                .await
                .map_err(self.fault("pinging PostgreSQL"))
        }
    }

    fn stock(&self, sku: &SkuId) -> impl Step<Option<StockLevel>> {
        async move {
            let mut connection = self.connection("reading stock").await?;
            common::stock(&mut *connection, sql::STOCK, sku)
                .await
                .map_err(self.fault("reading stock"))
        }
    }

    fn ledger(&self, sku: &SkuId, page: LedgerPage) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut connection = self.connection("reading the ledger").await?;
            let rows = common::ledger_page(&mut *connection, sql::LEDGER_PAGE, sku, page)
                .await
                .map_err(self.fault("reading the ledger"))?;
            common::entries(rows)
        }
    }

    fn snapshot(&self) -> impl Step<Vec<SkuSnapshot>> {
        async move {
            let mut connection = self.connection("auditing").await?;
            let rows = common::snapshot(&mut *connection, sql::SNAPSHOT)
                .await
                .map_err(self.fault("auditing"))?;
            common::snapshots(rows)
        }
    }

    fn orphan_ledger(&self) -> impl Step<Vec<OrphanLedger>> {
        self.orphan_ledger_rows()
    }

    fn order_check(&self) -> impl Step<OrderCheck> {
        async move {
            let mut connection = self.connection("checking orders").await?;
            common::order_check::<Postgres>(&mut connection, sql::ORDER_COUNT, sql::INCOMPLETE_ORDERS)
                .await
                .map_err(self.fault("checking orders"))
        }
    }

    fn miss_facts(&self, sku: &SkuId, key: Option<&IdempotencyKey>) -> impl Step<MissFacts> {
        async move {
            let mut connection = self.connection("explaining a miss").await?;
            let row = common::miss_facts(&mut *connection, sql::MISS_FACTS, sku, key)
                .await
                .map_err(self.fault("explaining a miss"))?;
            common::facts(row)
        }
    }

    fn find_keys(&self, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut connection = self.connection("looking up keys").await?;
            self.find_keys_on(&mut connection, keys).await
        }
    }

    fn settle_and_find(&self, sku: &SkuId, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("resolving a lost answer"))?;
            for lock in [sql::SETTLE_ROW, sql::SETTLE_BUCKETS] {
                sqlx::query(lock)
                    .bind(sku.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(self.fault("waiting out the lost transaction's locks"))?;
            }
            let found = self.find_keys_on(&mut tx, keys).await;
            self.rollback(tx).await;
            found
        }
    }

    fn find_order(&self, order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        async move {
            let mut connection = self.connection("reading an order").await?;
            self.find_order_on(&mut connection, order_id).await
        }
    }

    fn settle_and_find_order(&self, skus: &[&SkuId], order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        self.settle_and_find_order_in(skus, order_id)
    }

    fn find_hold(&self, hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.find_hold_in(hold_id)
    }

    fn settle_and_find_hold(&self, skus: &[&SkuId], hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.settle_and_find_hold_in(skus, hold_id)
    }

    fn has_due_holds(&self, sku: &SkuId) -> impl Step<bool> {
        self.has_due_holds_in(sku)
    }

    fn hold_check(&self) -> impl Step<HoldCheck> {
        self.hold_check_in()
    }

    fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> impl Step<bool> {
        async move {
            let created = sqlx::query(sql::CREATE_SKU)
                .bind(sku.as_str())
                .bind(initial_stock)
                .execute(&mut *self.connection("creating a sku").await?)
                .await
                .map_err(self.fault("creating a sku"))?;
            Ok(created.rows_affected() == 1)
        }
    }

    fn restock(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let row: Option<(i64, i64)> = sqlx::query_as(sql::RESTOCK)
                .bind(change.sku.as_str())
                .bind(change.quantity.get())
                .bind(STOCK_MAX)
                .bind(change.key.as_str())
                .fetch_optional(&mut *self.connection("restocking").await?)
                .await
                .map_err(self.fault("restocking"))?;
            Ok(row.map(written))
        }
    }

    fn guarded_deduct(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let row: Option<(i64, i64)> = sqlx::query_as(sql::GUARDED_DEDUCT)
                .bind(change.sku.as_str())
                .bind(change.quantity.get())
                .bind(change.key.as_str())
                .fetch_optional(&mut *self.connection("deducting (guarded)").await?)
                .await
                .map_err(self.fault("deducting (guarded)"))?;
            Ok(row.map(written))
        }
    }

    fn read_versioned(&self, sku: &SkuId) -> impl Step<Option<VersionedRow>> {
        async move {
            let row: Option<(i64, i64, bool)> = sqlx::query_as(sql::READ_VERSIONED)
                .bind(sku.as_str())
                .fetch_optional(&mut *self.connection("reading a version").await?)
                .await
                .map_err(self.fault("reading a version"))?;
            Ok(row.map(|(stock, version, sharded)| VersionedRow {
                stock,
                version,
                sharded,
            }))
        }
    }

    fn compare_and_set(
        &self,
        change: Change<'_>,
        read: VersionedRow,
        row_stock_after: i64,
    ) -> impl Step<Option<Written>> {
        async move {
            let row: Option<(i64, i64)> = sqlx::query_as(sql::COMPARE_AND_SET)
                .bind(change.sku.as_str())
                .bind(row_stock_after)
                .bind(-change.quantity.get())
                .bind(change.key.as_str())
                .bind(read.version)
                .fetch_optional(&mut *self.connection("compare-and-set").await?)
                .await
                .map_err(self.fault("compare-and-set"))?;
            Ok(row.map(written))
        }
    }

    fn take_from_bucket(&self, change: Change<'_>, spread_eagerly: bool) -> impl Step<Option<Written>> {
        async move {
            let (ledger_id, stock_after, sharded): (Option<i64>, Option<i64>, bool) =
                sqlx::query_as(sql::TAKE_FREE_BUCKET)
                    .bind(change.sku.as_str())
                    .bind(change.quantity.get())
                    .bind(change.key.as_str())
                    .bind(!spread_eagerly)
                    .fetch_one(&mut *self.connection("taking from a free bucket").await?)
                    .await
                    .map_err(self.fault("taking from a free bucket"))?;
            if let (Some(ledger_id), Some(stock_after)) = (ledger_id, stock_after) {
                return Ok(Some(Written {
                    ledger_id,
                    stock_after,
                }));
            }
            if !sharded {
                return Ok(None);
            }
            let row: Option<(i64, i64)> = sqlx::query_as(sql::WAIT_FOR_BUCKET)
                .bind(change.sku.as_str())
                .bind(change.quantity.get())
                .bind(change.key.as_str())
                .fetch_optional(&mut *self.connection("waiting for a bucket").await?)
                .await
                .map_err(self.fault("waiting for a bucket"))?;
            Ok(row.map(written))
        }
    }

    fn begin(&self, _wait: LockWait) -> impl Step<Self::Tx> {
        async move {
            common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("beginning a transaction"))
        }
    }

    fn lock_row(&self, tx: &mut Self::Tx, sku: &SkuId, wait: LockWait) -> impl Step<Option<LockedRow>> {
        async move {
            let statement = match wait {
                LockWait::Wait => sql::LOCK_ROW,
                LockWait::NoWait => sql::LOCK_ROW_NOWAIT,
            };
            let row: Option<(i64, bool, Option<i64>, i64)> = sqlx::query_as(statement)
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("locking the sku row"))?;
            Ok(
                row.map(|(stock, sharded, snapshot_row_stock, bucket_stock)| LockedRow {
                    stock,
                    // See `total_after!` in sql.rs: the snapshot's total, shifted to the locked row.
                    bucket_offset: match snapshot_row_stock {
                        Some(snapshot_row_stock) if sharded && bucket_stock > 0 => {
                            snapshot_row_stock + bucket_stock - stock
                        }
                        _ => 0,
                    },
                    sharded,
                }),
            )
        }
    }

    fn write_row(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        async move {
            let row: (i64, i64) = sqlx::query_as(sql::WRITE_ROW)
                .bind(change.sku.as_str())
                .bind(row_stock_after)
                .bind(change.quantity.get())
                .bind(stock_after)
                .bind(change.key.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(self.fault("writing the locked row"))?;
            Ok(written(row))
        }
    }

    fn write_batch(&self, tx: &mut Self::Tx, sku: &SkuId, plan: &BatchPlan) -> impl Step<Vec<i64>> {
        async move { self.write_batch_in(tx, sku, plan).await }
    }

    fn writes_batch_alone(&self) -> bool {
        true
    }

    fn write_batch_alone(
        &self,
        sku: &SkuId,
        rows: &[(i64, &IdempotencyKey)],
    ) -> impl Step<Option<Vec<(i64, i64)>>> {
        async move { self.write_batch_alone_in(sku, rows).await }
    }

    fn claim_order(
        &self,
        tx: &mut Self::Tx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> impl Step<()> {
        self.claim_order_in(tx, order_id, lines, line_count)
    }

    fn claim_hold(
        &self,
        tx: &mut Self::Tx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> impl Step<DateTime<Utc>> {
        self.claim_hold_in(tx, hold_id, lines, line_count, ttl_s)
    }

    fn lock_hold(&self, tx: &mut Self::Tx, hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.hold_on(tx, sql::LOCK_HOLD, hold_id)
    }

    fn lock_due_holds(
        &self,
        tx: &mut Self::Tx,
        sku: Option<&SkuId>,
        limit: u32,
    ) -> impl Step<Vec<StoredHold>> {
        self.lock_due_holds_in(tx, sku, limit)
    }

    fn set_hold_state(&self, tx: &mut Self::Tx, hold_id: &HoldId, state: HoldState) -> impl Step<()> {
        self.set_hold_state_in(tx, hold_id, state)
    }

    fn claim_orders(&self, tx: &mut Self::Tx, claims: &[OrderClaim<'_>]) -> impl Step<()> {
        self.claim_orders_in(tx, claims)
    }

    fn lock_rows(&self, tx: &mut Self::Tx, skus: &[&SkuId]) -> impl Step<Vec<Option<LockedRow>>> {
        self.lock_rows_in(tx, skus)
    }

    fn write_lines(&self, tx: &mut Self::Tx, lines: &[PlannedLine<'_>]) -> impl Step<Vec<Written>> {
        self.write_lines_in(tx, lines)
    }

    fn write_line(
        &self,
        tx: &mut Self::Tx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        self.write_line_in(tx, line, row_stock_after, stock_after)
    }

    fn guarded_line(&self, tx: &mut Self::Tx, line: LineWrite<'_>) -> impl Step<Option<Written>> {
        self.guarded_line_in(tx, line)
    }

    fn write_adjustment(
        &self,
        tx: &mut Self::Tx,
        adjustment: AdjustWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        async move {
            let row: (i64, i64) = sqlx::query_as(sql::WRITE_ADJUSTMENT)
                .bind(adjustment.sku.as_str())
                .bind(row_stock_after)
                .bind(adjustment.delta)
                .bind(stock_after)
                .bind(adjustment.key.as_str())
                .bind(adjustment.reference)
                .bind(adjustment.kind.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(self.fault("writing an adjustment"))?;
            Ok(written(row))
        }
    }

    fn lock_all(&self, tx: &mut Self::Tx, sku: &SkuId) -> impl Step<AllLocked> {
        async move {
            let row: Option<i64> = sqlx::query_scalar(sql::LOCK_ALL_ROW)
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("locking the sku row"))?;
            let Some(row_stock) = row else {
                return Ok(AllLocked::Missing);
            };
            let buckets: Vec<(i32, i64)> = sqlx::query_as(sql::LOCK_ALL_BUCKETS)
                .bind(sku.as_str())
                .fetch_all(&mut **tx)
                .await
                .map_err(self.fault("locking the buckets"))?;
            Ok(AllLocked::Locked {
                row_stock,
                buckets: buckets
                    .into_iter()
                    .map(|(bucket, stock)| (i64::from(bucket), stock))
                    .collect(),
            })
        }
    }

    fn write_spread(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        buckets: &[(i64, i64)],
        stock_after: i64,
    ) -> impl Step<Written> {
        let (ids, stocks): (Vec<i32>, Vec<i64>) = buckets
            .iter()
            .map(|(bucket, stock)| (i32::try_from(*bucket).unwrap_or(i32::MAX), *stock))
            .unzip();
        async move {
            let row: (i64, i64) = sqlx::query_as(sql::WRITE_SPREAD)
                .bind(change.sku.as_str())
                .bind(&ids)
                .bind(&stocks)
                .bind(change.quantity.get())
                .bind(stock_after)
                .bind(change.key.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(self.fault("spreading a sku"))?;
            Ok(written(row))
        }
    }

    fn write_gather(&self, tx: &mut Self::Tx, sku: &SkuId, bucket_stock: i64) -> impl Step<()> {
        async move {
            sqlx::query(sql::WRITE_GATHER)
                .bind(sku.as_str())
                .bind(bucket_stock)
                .execute(&mut **tx)
                .await
                .map(|_| ())
                .map_err(self.fault("gathering buckets"))
        }
    }

    fn commit(&self, tx: Self::Tx) -> impl Step<()> {
        async move { tx.commit().await.map_err(self.fault("committing")) }
    }

    async fn rollback(&self, tx: Self::Tx) {
        if let Err(error) = tx.rollback().await {
            // The connection is likely broken; sqlx will not reuse it. Nothing committed.
            tracing::debug!(%error, "rolling back failed");
        }
    }
}
