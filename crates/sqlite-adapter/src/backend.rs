//! The engine's primitives on SQLite.

use chrono::{DateTime, Utc};
use sqlx::QueryBuilder;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use stockguard_core::engine::{
    AdjustWrite, Backend, Change, Fault, LineWrite, LockWait, LockedRow, MissFacts, PoolWaitStats, Step,
    StoredHold, StoredOrder, VersionedRow, Written,
};
use stockguard_core::{
    BatchPlan, Capabilities, DeductError, EngineConfig, HoldCheck, HoldId, HoldState, IdempotencyKey,
    LedgerEntry, LedgerPage, LedgerReason, LockFeature, OrderCheck, OrderId, PoolStatus, STOCK_MAX,
    ServerProbe, SkuId, SkuSnapshot, StockLevel, Strategy,
};

use stockguard_sql as common;

use crate::sql;
use crate::{MIGRATOR, SqliteConfig, error};

/// Ledger rows per multi-row `INSERT` in a coalesced batch. Each row binds 5 parameters, so
/// a statement binds at most 1 000, far below SQLite's limit of 32 766 host parameters.
const LEDGER_ROWS_PER_INSERT: usize = 200;

/// Idempotency keys per `IN (…)` lookup (one parameter each).
const KEYS_PER_LOOKUP: usize = 500;

/// Connections in the pool that `NoWait` uses (busy timeout 0).
const NO_WAIT_CONNECTIONS: u32 = 2;

pub(crate) type SqliteTx = common::Tx<Sqlite>;

/// The SQLite side of a [`crate::SqliteStore`]: two pools on one file (the second, with no
/// busy wait, serves `NoWait`), and the settings.
#[derive(Debug)]
pub struct SqliteBackend {
    pool: common::TimedPool<Sqlite>,
    /// Its acquires are timed into `pool`'s histogram: one pool-wait figure per store.
    no_wait_pool: common::TimedPool<Sqlite>,
    config: SqliteConfig,
}

pub(crate) fn fault(context: &'static str) -> impl FnOnce(sqlx::Error) -> Fault {
    move |e| error::fault(e, context)
}

impl SqliteBackend {
    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        self.pool.inner()
    }

    /// A pooled connection for one autocommit statement, its wait timed.
    pub(crate) async fn connection(&self, context: &'static str) -> Result<PoolConnection<Sqlite>, Fault> {
        self.pool.acquire().await.map_err(fault(context))
    }

    pub(crate) async fn begin_write(&self) -> Result<SqliteTx, Fault> {
        common::Tx::begin(&self.pool, sql::BEGIN_WRITE)
            .await
            .map_err(fault("taking the write lock"))
    }

    /// Commits a self-contained write on success; rolls back before returning otherwise:
    /// dropping a transaction only queues its ROLLBACK, and until it runs the write lock is
    /// still held, so the next writer (a `NoWait` one above all) would find it busy.
    async fn finish<T>(&self, tx: SqliteTx, outcome: Result<Option<T>, Fault>) -> Result<Option<T>, Fault> {
        match outcome {
            Ok(Some(value)) => {
                tx.commit().await.map_err(fault("committing"))?;
                Ok(Some(value))
            }
            other => {
                self.rollback(tx).await;
                other
            }
        }
    }

    async fn insert_ledger(
        conn: &mut SqliteConnection,
        change: Change<'_>,
        reason: LedgerReason,
        stock_after: i64,
    ) -> Result<Written, Fault> {
        let delta = match reason {
            LedgerReason::Restock => change.quantity.get(),
            // Called for deductions and restocks only: orders and adjustments write their own rows.
            _ => -change.quantity.get(),
        };
        let ledger_id: i64 = sqlx::query_scalar(sql::INSERT_LEDGER)
            .bind(change.sku.as_str())
            .bind(delta)
            .bind(stock_after)
            .bind(reason.as_str())
            .bind(change.key.as_str())
            .fetch_one(&mut *conn)
            .await
            .map_err(fault("writing the ledger row"))?;
        Ok(Written {
            ledger_id,
            stock_after,
        })
    }

    /// A conditional update `RETURNING stock`, then the ledger row; `None` when it matched nothing.
    async fn update_then_log(
        conn: &mut SqliteConnection,
        update: sqlx::query::QueryScalar<'_, Sqlite, i64, sqlx::sqlite::SqliteArguments>,
        change: Change<'_>,
        reason: LedgerReason,
    ) -> Result<Option<Written>, Fault> {
        let Some(stock_after) = update
            .fetch_optional(&mut *conn)
            .await
            .map_err(fault("updating stock"))?
        else {
            return Ok(None);
        };
        Self::insert_ledger(conn, change, reason, stock_after)
            .await
            .map(Some)
    }

    async fn find_keys_on(
        conn: &mut SqliteConnection,
        keys: &[&IdempotencyKey],
    ) -> Result<Vec<LedgerEntry>, Fault> {
        let rows = common::find_keys::<Sqlite>(conn, sql::FIND_KEYS, keys, KEYS_PER_LOOKUP)
            .await
            .map_err(fault("looking up keys"))?;
        common::entries(rows)
    }
}

impl Backend for SqliteBackend {
    type Config = SqliteConfig;
    type Tx = SqliteTx;

    /// Opens (creating if missing and allowed) the database file and the pools. Every
    /// connection runs in WAL mode (readers never block the writer, nor it them), with
    /// `synchronous = FULL` (a commit is durable once the call returns, even across a power
    /// loss), foreign keys on, and the configured busy timeout.
    async fn open(config: SqliteConfig) -> Result<Self, DeductError> {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(config.create_if_missing)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options.clone())
            .await
            .map_err(|e| error::fault(e, "opening the SQLite database").into_error())?;
        let no_wait_pool = SqlitePoolOptions::new()
            .max_connections(NO_WAIT_CONNECTIONS)
            .acquire_timeout(config.acquire_timeout)
            .connect_lazy_with(options.busy_timeout(std::time::Duration::ZERO));
        let pool = common::TimedPool::new(pool);
        let no_wait_pool = common::TimedPool::sharing_wait_with(no_wait_pool, &pool);
        Ok(Self {
            pool,
            no_wait_pool,
            config,
        })
    }

    fn engine_config(config: &SqliteConfig) -> EngineConfig {
        config.engine
    }

    async fn migrate(&self) -> Result<(), DeductError> {
        MIGRATOR
            .run(self.pool.inner())
            .await
            .map_err(|e| DeductError::internal("running migrations", e))
    }

    fn name(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Not `Sharded`: one writer at a time, so there is nothing to spread.
            strategies: Strategy::ALL
                .into_iter()
                .filter(|s| *s != Strategy::Sharded)
                .collect(),
            // BEGIN IMMEDIATE locks the whole database, not a row.
            row_level_locking: false,
        }
    }

    async fn probe(&self) -> Result<ServerProbe, DeductError> {
        let failed = |e| error::fault(e, "probing SQLite").into_error();
        let mut connection = self.pool.inner().acquire().await.map_err(failed)?;
        let version: String = sqlx::query_scalar("SELECT sqlite_version()")
            .fetch_one(&mut *connection)
            .await
            .map_err(failed)?;
        Ok(ServerProbe::without_row_locks("SQLite", version))
    }

    fn lock_features(&self, _strategy: Strategy) -> &'static [LockFeature] {
        // One writer at a time (BEGIN IMMEDIATE): the adapter writes no row-locking clause.
        &[]
    }

    fn pool_status(&self) -> PoolStatus {
        self.pool.status(self.config.max_connections)
    }

    fn pool_wait(&self) -> &PoolWaitStats {
        self.pool.wait()
    }

    async fn close(&self) {
        self.no_wait_pool.close().await;
        self.pool.close().await;
    }

    fn ping(&self) -> impl Step<()> {
        async move {
            let mut connection = self.connection("pinging SQLite").await?;
            common::execute(&mut *connection, sql::PING)
                .await
                .map_err(fault("pinging SQLite"))
        }
    }

    fn stock(&self, sku: &SkuId) -> impl Step<Option<StockLevel>> {
        async move {
            let mut connection = self.connection("reading stock").await?;
            common::stock(&mut *connection, sql::STOCK, sku)
                .await
                .map_err(fault("reading stock"))
        }
    }

    fn ledger(&self, sku: &SkuId, page: LedgerPage) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut connection = self.connection("reading the ledger").await?;
            let rows = common::ledger_page(&mut *connection, sql::LEDGER_PAGE, sku, page)
                .await
                .map_err(fault("reading the ledger"))?;
            common::entries(rows)
        }
    }

    fn snapshot(&self) -> impl Step<Vec<SkuSnapshot>> {
        async move {
            let mut connection = self.connection("auditing").await?;
            let rows = common::snapshot(&mut *connection, sql::SNAPSHOT)
                .await
                .map_err(fault("auditing"))?;
            common::snapshots(rows)
        }
    }

    fn order_check(&self) -> impl Step<OrderCheck> {
        async move {
            let mut conn = self.connection("checking orders").await?;
            common::order_check::<Sqlite>(&mut conn, sql::ORDER_COUNT, sql::INCOMPLETE_ORDERS)
                .await
                .map_err(fault("checking orders"))
        }
    }

    fn miss_facts(&self, sku: &SkuId, key: Option<&IdempotencyKey>) -> impl Step<MissFacts> {
        async move {
            let mut connection = self.connection("explaining a miss").await?;
            let row = common::miss_facts(&mut *connection, sql::MISS_FACTS, sku, key)
                .await
                .map_err(fault("explaining a miss"))?;
            common::facts(row)
        }
    }

    fn find_keys(&self, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut conn = self.connection("looking up keys").await?;
            Self::find_keys_on(&mut conn, keys).await
        }
    }

    /// The write lock is the only lock: once `BEGIN IMMEDIATE` holds it, no other write is
    /// in progress, so the lookup is final.
    fn settle_and_find(&self, _sku: &SkuId, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let mut tx = self.begin_write().await?;
            let found = Self::find_keys_on(&mut tx, keys).await;
            self.rollback(tx).await;
            found
        }
    }

    fn find_order(&self, order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        async move {
            let mut conn = self.connection("reading an order").await?;
            Self::find_order_on(&mut conn, order_id).await
        }
    }

    fn settle_and_find_order(&self, _skus: &[&SkuId], order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        self.settle_and_find_order_in(order_id)
    }

    fn find_hold(&self, hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.find_hold_in(hold_id)
    }

    fn settle_and_find_hold(&self, _skus: &[&SkuId], hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.settle_and_find_hold_in(hold_id)
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
                .map_err(fault("creating a sku"))?;
            Ok(created.rows_affected() == 1)
        }
    }

    fn restock(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let mut tx = self.begin_write().await?;
            let update = sqlx::query_scalar(sql::RESTOCK_UPDATE)
                .bind(change.sku.as_str())
                .bind(change.quantity.get())
                .bind(STOCK_MAX);
            let outcome = Self::update_then_log(&mut tx, update, change, LedgerReason::Restock).await;
            self.finish(tx, outcome).await
        }
    }

    fn guarded_deduct(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        async move {
            let mut tx = self.begin_write().await?;
            let update = sqlx::query_scalar(sql::GUARDED_UPDATE)
                .bind(change.sku.as_str())
                .bind(change.quantity.get());
            let outcome = Self::update_then_log(&mut tx, update, change, LedgerReason::Deduct).await;
            self.finish(tx, outcome).await
        }
    }

    fn read_versioned(&self, sku: &SkuId) -> impl Step<Option<VersionedRow>> {
        async move {
            let row: Option<(i64, i64)> = sqlx::query_as(sql::READ_VERSIONED)
                .bind(sku.as_str())
                .fetch_optional(&mut *self.connection("reading a version").await?)
                .await
                .map_err(fault("reading a version"))?;
            Ok(row.map(|(stock, version)| VersionedRow {
                stock,
                version,
                sharded: false,
            }))
        }
    }

    /// The compare-and-set runs in a write transaction started IMMEDIATE, so the UPDATE and
    /// the ledger INSERT commit together and the transaction never has to upgrade from
    /// reader to writer.
    fn compare_and_set(
        &self,
        change: Change<'_>,
        read: VersionedRow,
        row_stock_after: i64,
    ) -> impl Step<Option<Written>> {
        async move {
            let mut tx = self.begin_write().await?;
            let outcome = async {
                let swapped = sqlx::query(sql::COMPARE_AND_SET)
                    .bind(change.sku.as_str())
                    .bind(row_stock_after)
                    .bind(read.version)
                    .execute(&mut *tx)
                    .await
                    .map_err(fault("compare-and-set"))?;
                if swapped.rows_affected() == 0 {
                    return Ok(None);
                }
                Self::insert_ledger(&mut tx, change, LedgerReason::Deduct, row_stock_after)
                    .await
                    .map(Some)
            }
            .await;
            self.finish(tx, outcome).await
        }
    }

    /// The write lock is taken here, at `BEGIN IMMEDIATE`: waiting up to the busy timeout,
    /// or not at all (the `NoWait` pool).
    fn begin(&self, wait: LockWait) -> impl Step<Self::Tx> {
        async move {
            let pool = match wait {
                LockWait::Wait => &self.pool,
                LockWait::NoWait => &self.no_wait_pool,
            };
            common::Tx::begin(pool, sql::BEGIN_WRITE)
                .await
                .map_err(fault("taking the write lock"))
        }
    }

    fn lock_row(&self, tx: &mut Self::Tx, sku: &SkuId, _wait: LockWait) -> impl Step<Option<LockedRow>> {
        async move {
            let stock: Option<i64> = sqlx::query_scalar(sql::LOCK_ROW)
                .bind(sku.as_str())
                .fetch_optional(&mut **tx)
                .await
                .map_err(fault("reading the sku row"))?;
            Ok(stock.map(|stock| LockedRow {
                stock,
                bucket_offset: 0,
                sharded: false,
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
                .bind(change.sku.as_str())
                .bind(row_stock_after)
                .execute(&mut **tx)
                .await
                .map_err(fault("writing the row"))?;
            Self::insert_ledger(tx, change, LedgerReason::Deduct, stock_after).await
        }
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
        Self::hold_on(tx, hold_id)
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
            sqlx::query(sql::SET_ROW_STOCK)
                .bind(adjustment.sku.as_str())
                .bind(row_stock_after)
                .execute(&mut **tx)
                .await
                .map_err(fault("writing the row"))?;
            let ledger_id: i64 = sqlx::query_scalar(sql::INSERT_ADJUSTMENT)
                .bind(adjustment.sku.as_str())
                .bind(adjustment.delta)
                .bind(stock_after)
                .bind(adjustment.key.as_str())
                .bind(adjustment.reference)
                .bind(adjustment.kind.as_str())
                .fetch_one(&mut **tx)
                .await
                .map_err(fault("writing an adjustment"))?;
            Ok(Written {
                ledger_id,
                stock_after,
            })
        }
    }

    fn write_batch(&self, tx: &mut Self::Tx, sku: &SkuId, plan: &BatchPlan) -> impl Step<Vec<i64>> {
        async move {
            sqlx::query(sql::SET_ROW_STOCK)
                .bind(sku.as_str())
                .bind(plan.stock_after)
                .execute(&mut **tx)
                .await
                .map_err(fault("writing the batch's stock"))?;
            let mut ids_by_key: Vec<(i64, String)> = Vec::with_capacity(plan.new_rows.len());
            for chunk in plan.new_rows.chunks(LEDGER_ROWS_PER_INSERT) {
                let mut insert = QueryBuilder::<Sqlite>::new(
                    "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) ",
                );
                insert.push_values(chunk, |mut row, new| {
                    row.push_bind(sku.as_str())
                        .push_bind(-new.quantity)
                        .push_bind(new.stock_after)
                        .push_bind(LedgerReason::Deduct.as_str())
                        .push_bind(new.idempotency_key.as_str());
                });
                insert.push(" RETURNING id, idempotency_key");
                ids_by_key.extend(
                    insert
                        .build_query_as::<(i64, String)>()
                        .fetch_all(&mut **tx)
                        .await
                        .map_err(fault("writing a batch"))?,
                );
            }
            // Ids by key: SQLite does not promise RETURNING order.
            Ok(common::ids_in_key_order(plan.new_keys(), &ids_by_key))
        }
    }

    fn commit(&self, tx: Self::Tx) -> impl Step<()> {
        async move { tx.commit().await.map_err(fault("committing")) }
    }

    async fn rollback(&self, tx: Self::Tx) {
        if let Err(error) = tx.rollback().await {
            // The connection is unusable; sqlx closes it. Nothing was committed.
            tracing::debug!(%error, "rolling back failed");
        }
    }
}
