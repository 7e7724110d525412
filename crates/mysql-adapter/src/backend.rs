//! The engine's primitives on MySQL 8 and MariaDB.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::pool::PoolConnection;
use sqlx::{Executor, MySql};
use stockguard_core::engine::{
    AdjustWrite, AllLocked, Backend, Change, Fault, FaultKind, LineWrite, LockWait, LockedRow, MissFacts,
    OrderClaim, PlannedLine, PoolWaitStats, Step, StoredHold, StoredOrder, VersionedRow, Written,
};
use stockguard_core::{
    BatchPlan, Capabilities, DeductError, EngineConfig, HoldCheck, HoldId, HoldState, IdempotencyKey,
    LedgerEntry, LedgerPage, LedgerReason, LockFeature, OrderCheck, OrderId, PoolStatus, ServerProbe, SkuId,
    SkuSnapshot, StockLevel, Strategy,
};

use crate::config::{ServerFlavor, session_statements};
use stockguard_sql as common;

use crate::sql;
use crate::{MIGRATOR, MySqlConfig, error};

/// Most rows in one multi-row `INSERT` or `IN (…)` list: keeps every statement far below
/// the protocol's 65 535 placeholders however large a batch is configured.
pub(crate) const ROWS_PER_STATEMENT_MAX: usize = 1_000;

pub(crate) type MySqlTx = common::Tx<MySql>;

/// The MySQL/MariaDB side of a [`crate::MySqlStore`]: a pool, the settings and the flavour.
#[derive(Debug)]
pub struct MySqlBackend {
    pub(crate) pool: common::TimedPool<MySql>,
    pub(crate) config: MySqlConfig,
    pub(crate) flavor: ServerFlavor,
    /// Galera replication runs (`wsrep_on`): the reads that decide an answer wait for the
    /// cluster first ([`MySqlBackend::causal_connection`]).
    pub(crate) galera: bool,
}

impl MySqlBackend {
    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &MySqlPool {
        self.pool.inner()
    }

    /// A pooled connection for one autocommit statement, its wait timed.
    pub(crate) async fn connection(&self, context: &'static str) -> Result<PoolConnection<MySql>, Fault> {
        self.pool.acquire().await.map_err(self.fault(context))
    }

    /// Which server this backend talks to.
    pub fn flavor(&self) -> ServerFlavor {
        self.flavor
    }

    pub(crate) fn fault(&self, context: &'static str) -> impl FnOnce(sqlx::Error) -> Fault + '_ {
        move |e| {
            // On Galera, a row read in a transaction a replicated write is aborting once came
            // back impossible (NULL in a NOT NULL column): that transaction is rolled back, as
            // after a certification failure, and the engine retries it (see `galera.rs`).
            if self.galera && matches!(e, sqlx::Error::ColumnDecode { .. }) {
                return Fault::new(FaultKind::Deadlock, context, e);
            }
            error::fault(e, context, self.pool.size() < self.config.max_connections)
        }
    }

    /// Inserts one ledger row and returns its id. The foreign-key check takes a shared lock on
    /// the SKU's inventory row: covered by the caller's own lock on it, except for a `Sharded`
    /// bucket deduction, which holds only its bucket (hence the bucket-then-row lock order of
    /// the paths that lock every bucket).
    pub(crate) async fn insert_ledger(
        &self,
        tx: &mut MySqlTx,
        change: Change<'_>,
        reason: LedgerReason,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        let delta = match reason {
            LedgerReason::Restock => change.quantity.get(),
            // Called for deductions and restocks only: orders and adjustments write their own rows.
            _ => -change.quantity.get(),
        };
        let done = sqlx::query(sql::INSERT_LEDGER)
            .bind(change.sku.as_str())
            .bind(delta)
            .bind(stock_after)
            .bind(reason.as_str())
            .bind(change.key.as_str())
            .execute(&mut **tx)
            .await
            .map_err(self.fault("writing the ledger row"))?;
        let ledger_id = i64::try_from(done.last_insert_id())
            .map_err(|e| Fault::new(FaultKind::Other, "ledger id does not fit in BIGINT", e))?;
        Ok(Written {
            ledger_id,
            stock_after,
        })
    }

    /// Units in a sharded SKU's buckets (0 for a SKU never sharded, without a query). Exact
    /// when the caller holds the SKU row's exclusive lock: stock moves between the row and
    /// buckets only under that lock, and a `Sharded` deduction not yet committed is still
    /// waiting for its ledger insert's shared lock on the row, so it commits after the caller
    /// and belongs after it in the ledger's order.
    pub(crate) async fn bucket_stock_if(
        &self,
        tx: &mut MySqlTx,
        sku: &SkuId,
        sharded: bool,
    ) -> Result<i64, Fault> {
        if !sharded {
            return Ok(0);
        }
        sqlx::query_scalar(sql::BUCKET_STOCK)
            .bind(sku.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.fault("reading bucket stock"))
    }

    /// The SKU's total after this transaction's write to its row: the row's stock (the
    /// `UPDATE` that preceded this holds the row's exclusive lock, so the value is exactly
    /// the one this transaction wrote: the replacement for `UPDATE … RETURNING`) plus, for a
    /// sharded SKU, its bucket stock.
    pub(crate) async fn read_back(&self, tx: &mut MySqlTx, sku: &SkuId) -> Result<i64, Fault> {
        let (row_stock, sharded): (i64, bool) = sqlx::query_as(sql::READ_BACK)
            .bind(sku.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(self.fault("reading back the stock"))?;
        Ok(row_stock + self.bucket_stock_if(tx, sku, sharded).await?)
    }

    pub(crate) async fn find_keys_on(
        &self,
        connection: &mut sqlx::MySqlConnection,
        keys: &[&IdempotencyKey],
    ) -> Result<Vec<LedgerEntry>, Fault> {
        let rows = common::find_keys::<MySql>(connection, sql::FIND_KEYS, keys, ROWS_PER_STATEMENT_MAX)
            .await
            .map_err(self.fault("looking up keys"))?;
        common::entries(rows)
    }
}

impl Backend for MySqlBackend {
    type Config = MySqlConfig;
    type Tx = MySqlTx;

    async fn open(config: MySqlConfig) -> Result<Self, DeductError> {
        let options = MySqlConnectOptions::from_str(&config.url)
            .map_err(|e| DeductError::internal("parsing the MySQL URL", e))?;
        let (flavor, galera) = Self::detect_server(&options).await?;
        let statements = session_statements(flavor, &config);
        let pool =
            MySqlPoolOptions::new()
                .max_connections(config.max_connections)
                .acquire_timeout(config.acquire_timeout)
                .after_connect(move |connection, _| {
                    let statements = statements.clone();
                    Box::pin(async move {
                        for statement in statements {
                            connection.execute(sqlx::AssertSqlSafe(statement)).await?;
                        }
                        Ok(())
                    })
                })
                .connect_lazy_with(options.statement_cache_capacity(
                    crate::config::statement_cache_capacity(config.max_connections),
                ));
        Ok(Self {
            pool: common::TimedPool::new(pool),
            config,
            flavor,
            galera,
        })
    }

    fn engine_config(config: &MySqlConfig) -> EngineConfig {
        config.engine
    }

    async fn migrate(&self) -> Result<(), DeductError> {
        MIGRATOR
            .run(self.pool.inner())
            .await
            .map_err(|e| DeductError::internal("running migrations", e))?;
        if self.galera {
            self.install_galera_guards()
                .await
                .map_err(|e| DeductError::internal("installing the Galera write guards", e))?;
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.flavor.backend()
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
            let mut connection = self.connection("pinging MySQL").await?;
            common::execute(&mut *connection, sql::PING)
                .await
                .map_err(self.fault("pinging MySQL"))
        }
    }

    fn stock(&self, sku: &SkuId) -> impl Step<Option<StockLevel>> {
        async move {
            let mut connection = self.causal_connection("reading stock").await?;
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

    fn order_check(&self) -> impl Step<OrderCheck> {
        async move {
            let mut connection = self.connection("checking orders").await?;
            common::order_check::<MySql>(&mut connection, sql::ORDER_COUNT, sql::INCOMPLETE_ORDERS)
                .await
                .map_err(self.fault("checking orders"))
        }
    }

    fn miss_facts(&self, sku: &SkuId, key: Option<&IdempotencyKey>) -> impl Step<MissFacts> {
        async move {
            let mut connection = self.causal_connection("explaining a miss").await?;
            let row = common::miss_facts(&mut *connection, sql::MISS_FACTS, sku, key)
                .await
                .map_err(self.fault("explaining a miss"))?;
            common::facts(row)
        }
    }

    fn find_keys(&self, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut connection = self.causal_connection("looking up keys").await?;
            self.find_keys_on(&mut connection, keys).await
        }
    }

    fn settle_and_find(&self, sku: &SkuId, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            self.wait_for_cluster("resolving a lost answer").await?;
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("resolving a lost answer"))?;
            for lock in [sql::SETTLE_BUCKETS, sql::SETTLE_ROW] {
                if let Err(error) = sqlx::query(lock).bind(sku.as_str()).execute(&mut *tx).await {
                    self.rollback(tx).await;
                    return Err(self.fault("waiting out the lost transaction's locks")(error));
                }
            }
            let found = self.find_keys_on(&mut tx, keys).await;
            self.rollback(tx).await;
            found
        }
    }

    fn find_order(&self, order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        async move {
            let mut connection = self.causal_connection("reading an order").await?;
            self.find_order_on(&mut connection, order_id).await
        }
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

    fn settle_and_find_order(&self, skus: &[&SkuId], order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        async move { self.settle_and_find_order_in(skus, order_id).await }
    }

    fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> impl Step<bool> {
        async move {
            let created = sqlx::query(sql::CREATE_SKU)
                .bind(sku.as_str())
                .bind(initial_stock)
                .bind(initial_stock)
                .execute(&mut *self.connection("creating a sku").await?)
                .await;
            match created {
                Ok(_) => Ok(true),
                Err(e)
                    if error::error_number(&e) == Some(error::DUPLICATE_ENTRY)
                        && error::duplicate_key_name(&e) == Some("PRIMARY") =>
                {
                    Ok(false)
                }
                Err(e) => Err(self.fault("creating a sku")(e)),
            }
        }
    }

    fn restock(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("beginning a restock"))?;
            let outcome = self.restock_in(&mut tx, change).await;
            self.finish(tx, outcome).await
        }
    }

    fn guarded_deduct(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("beginning a deduction"))?;
            let outcome = self.guarded_in(&mut tx, change).await;
            self.finish(tx, outcome).await
        }
    }

    fn read_versioned(&self, sku: &SkuId) -> impl Step<Option<VersionedRow>> {
        async move {
            // Outside any transaction: an autocommit read sees the latest committed version.
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
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("beginning a deduction"))?;
            let outcome = self
                .compare_and_set_in(&mut tx, change, read, row_stock_after)
                .await;
            self.finish(tx, outcome).await
        }
    }

    fn take_from_bucket(&self, change: Change<'_>, spread_eagerly: bool) -> impl Step<Option<Written>> {
        async move {
            let mut tx = common::Tx::begin(&self.pool, "BEGIN")
                .await
                .map_err(self.fault("beginning a deduction"))?;
            let outcome = self.take_from_bucket_in(&mut tx, change, spread_eagerly).await;
            self.finish(tx, outcome).await
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
            let row: Option<(i64, bool)> = sqlx::query_as(statement)
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(self.fault("locking the sku row"))?;
            let Some((stock, sharded)) = row else {
                return Ok(None);
            };
            Ok(Some(LockedRow {
                stock,
                bucket_offset: self.bucket_stock_if(tx, sku, sharded).await?,
                sharded,
            }))
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
            sqlx::query(sql::SET_ROW_STOCK)
                .bind(row_stock_after)
                .bind(change.sku.as_str())
                .execute(&mut **tx)
                .await
                .map_err(self.fault("writing the locked row"))?;
            self.insert_ledger(tx, change, LedgerReason::Deduct, stock_after)
                .await
        }
    }

    fn write_batch(&self, tx: &mut Self::Tx, sku: &SkuId, plan: &BatchPlan) -> impl Step<Vec<i64>> {
        async move { self.write_batch_in(tx, sku, plan).await }
    }

    fn claim_order(
        &self,
        tx: &mut Self::Tx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> impl Step<()> {
        async move { self.claim_order_in(tx, order_id, lines, line_count).await }
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

    fn write_line(
        &self,
        tx: &mut Self::Tx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        async move { self.write_line_in(tx, line, row_stock_after, stock_after).await }
    }

    fn guarded_line(&self, tx: &mut Self::Tx, line: LineWrite<'_>) -> impl Step<Option<Written>> {
        async move { self.guarded_line_in(tx, line).await }
    }

    fn write_adjustment(
        &self,
        tx: &mut Self::Tx,
        adjustment: AdjustWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        async move {
            self.write_adjustment_in(tx, adjustment, row_stock_after, stock_after)
                .await
        }
    }

    fn lock_all(&self, tx: &mut Self::Tx, sku: &SkuId) -> impl Step<AllLocked> {
        async move { self.lock_all_in(tx, sku).await }
    }

    fn write_spread(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        buckets: &[(i64, i64)],
        stock_after: i64,
    ) -> impl Step<Written> {
        async move { self.write_spread_in(tx, change, buckets, stock_after).await }
    }

    fn write_gather(&self, tx: &mut Self::Tx, sku: &SkuId, bucket_stock: i64) -> impl Step<()> {
        async move { self.write_gather_in(tx, sku, bucket_stock).await }
    }

    fn commit(&self, tx: Self::Tx) -> impl Step<()> {
        async move { tx.commit().await.map_err(self.fault("committing")) }
    }

    async fn rollback(&self, tx: Self::Tx) {
        if let Err(error) = tx.rollback().await {
            // The connection is likely broken; sqlx will not reuse a connection whose rollback
            // did not complete. Nothing committed.
            tracing::debug!(%error, "rolling back failed");
        }
    }
}
