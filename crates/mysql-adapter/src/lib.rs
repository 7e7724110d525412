//! MySQL 8 / MariaDB adapter for stockguard. It owns the SQL and maps MySQL error numbers onto
//! [`DeductError`]; the semantics live in `stockguard-core`. See `docs/mysql.md` for how it
//! differs from the PostgreSQL adapter and why.
//!
//! Neither server has `UPDATE … RETURNING`, so every write is an `UPDATE` whose affected-row
//! count says whether it applied, followed (in the same transaction, under the row lock the
//! `UPDATE` took) by a read-back of the new stock and a ledger `INSERT`.
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN; SELECT stock … FOR UPDATE; UPDATE … SET stock = <read − q>; INSERT ledger; COMMIT` |
//! | `NoWait` | as `Pessimistic` with `FOR UPDATE NOWAIT` (1205 on MariaDB, 3572 on MySQL → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version` (autocommit); `BEGIN; UPDATE … WHERE version = ?` (0 rows → retry)`; INSERT ledger; COMMIT` |
//! | `Guarded` | `BEGIN; UPDATE … SET stock = stock − q WHERE stock >= q` (0 rows → refuse)`; SELECT stock; INSERT ledger; COMMIT` |
//! | `Coalesced` | per batch: `BEGIN; SELECT … FOR UPDATE; UPDATE; INSERT … VALUES (…), (…); SELECT id … WHERE id >= LAST_INSERT_ID(); COMMIT` |
//! | `Sharded` | `BEGIN; SELECT stock, sharded, <bucket total>` (no lock); unsharded: `SELECT … FOR UPDATE SKIP LOCKED` on the row and, if free, take from it like `Pessimistic`; sharded: `SELECT bucket … FOR UPDATE SKIP LOCKED` (else wait for one random bucket with room), `UPDATE` it; `INSERT ledger; COMMIT`. If no bucket has room: `BEGIN;` lock the row and every bucket `FOR UPDATE`, deduct from the total, re-spread it; `COMMIT` |
//!
//! A SKU's stock is its row's `stock` plus its buckets' (`inventory_bucket`), see
//! [`stockguard_core::sharding`]. The strategies other than `Sharded` take from the row and,
//! before refusing, empty the buckets into it. A `Sharded` deduction holds one bucket and
//! then, through the ledger insert's foreign-key check, a shared lock on the SKU row; so the
//! paths that lock every bucket (spreading, gathering) take the buckets before the row.

mod error;

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions, MySqlRow};
use sqlx::{Connection, Executor, MySql, Row};
use stockguard_core::{
    AttemptError, BatchExecutor, BatchItem, BatchPlan, Capabilities, Coalescer, CoalescerConfig, DeductError,
    DeductRequest, IdempotencyKey, InvalidInput, InventoryStore, LedgerEntry, LedgerPage, LedgerReason,
    PoolStatus, Quantity, Receipt, RestockReceipt, RetryCause, RetryPolicy, STOCK_MAX, SkuId, SkuSnapshot,
    StockLevel, StoredSnapshotRow, Strategy,
    model::replay,
    sharding::{self, Gathered},
    single_item_outcome,
};

pub use error::classify;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every limit of the adapter, explicit. The same fields as the PostgreSQL adapter's config.
#[derive(Debug, Clone)]
pub struct MySqlConfig {
    /// Connection URL (`mysql://user:password@host:port/database`).
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a row lock before `LockTimeout`. Applied as the session's
    /// `innodb_lock_wait_timeout`, which has whole-second granularity: rounded up, at least 1 s.
    pub lock_timeout: Duration,
    /// Upper bound on any statement: MariaDB `max_statement_time` (every statement), MySQL
    /// `max_execution_time` (read-only `SELECT`s only; MySQL has no general bound).
    pub statement_timeout: Duration,
    /// Retries for version misses, deadlocks and idempotency races.
    pub retry: RetryPolicy,
    /// Group-commit limits for `Coalesced`.
    pub coalescer: CoalescerConfig,
    /// Buckets a SKU's stock is spread over by `Sharded` (1..=`SHARD_BUCKETS_MAX`).
    pub shard_buckets: u32,
    /// `Sharded` spreads a SKU on its first deduction instead of the first time a deduction
    /// finds the SKU's row busy. For SKUs known to be hot before the sale starts.
    pub spread_eagerly: bool,
}

impl MySqlConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            coalescer: CoalescerConfig::default(),
            shard_buckets: sharding::DEFAULT_SHARD_BUCKETS,
            spread_eagerly: false,
        }
    }
}

/// Which server answers. The two differ in a few places, each handled by a named method here
/// or by listing both error numbers in the error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFlavor {
    /// MariaDB (10.6+ for `NOWAIT` and `SKIP LOCKED`).
    MariaDb,
    /// Oracle MySQL (8.0.16+ for enforced CHECK constraints).
    MySql,
}

/// The largest `innodb_lock_wait_timeout` both servers accept, in seconds.
const LOCK_WAIT_TIMEOUT_MAX_SECS: u128 = 1_073_741_824;

/// Most rows in one multi-row `INSERT` or `IN (…)` list: keeps every statement far below
/// the protocol's 65 535 placeholders however large a batch is configured.
const ROWS_PER_STATEMENT_MAX: usize = 1_000;

impl ServerFlavor {
    /// Tells the servers apart by `SELECT VERSION()`: MariaDB's contains `MariaDB`.
    pub fn from_version(version: &str) -> Self {
        if version.contains("MariaDB") {
            ServerFlavor::MariaDb
        } else {
            ServerFlavor::MySql
        }
    }

    /// The name [`InventoryStore::backend`] reports.
    pub fn backend(self) -> &'static str {
        match self {
            ServerFlavor::MariaDb => "mariadb",
            ServerFlavor::MySql => "mysql",
        }
    }

    /// The session statement time bound. The variable's name, unit and reach differ:
    /// MariaDB `max_statement_time` is in seconds and bounds every statement; MySQL
    /// `max_execution_time` is in milliseconds and bounds read-only `SELECT`s only.
    fn statement_time_bound(self, bound: Duration) -> String {
        // 0 disables the bound on both servers, so never send 0.
        let bound_ms = bound.as_millis().max(1);
        match self {
            ServerFlavor::MariaDb => format!(
                "SET SESSION max_statement_time = {}.{:03}",
                bound_ms / 1000,
                bound_ms % 1000
            ),
            ServerFlavor::MySql => format!("SET SESSION max_execution_time = {bound_ms}"),
        }
    }
}

/// The statements run on every new pooled connection, before it is handed out.
fn session_statements(flavor: ServerFlavor, config: &MySqlConfig) -> Vec<String> {
    let lock_wait_timeout_secs = config
        .lock_timeout
        .as_millis()
        .div_ceil(1000)
        .clamp(1, LOCK_WAIT_TIMEOUT_MAX_SECS);
    vec![
        // READ COMMITTED, like PostgreSQL's default: every statement (not every transaction)
        // reads the latest committed data, and InnoDB takes no gap locks. See docs/mysql.md.
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
        // Never the 50 s server default: a request waits for a row lock at most this long.
        format!("SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout_secs}"),
        // Strict mode turns a would-be truncation or out-of-range value into an error on
        // every table, instead of a warning and a silently altered row.
        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')".to_owned(),
        flavor.statement_time_bound(config.statement_timeout),
    ]
}

/// The shared state behind a [`MySqlStore`]; also the coalescer's batch executor.
#[derive(Debug)]
pub struct MySqlShared {
    pool: MySqlPool,
    config: MySqlConfig,
    flavor: ServerFlavor,
    /// `Some(step)` when one multi-row `INSERT` gets consecutive ids `first, first + step, …`
    /// (`innodb_autoinc_lock_mode` 0 or 1, where a "simple insert" reserves its whole range at
    /// once), so a batch needs no read-back of its ledger ids. `None` otherwise.
    consecutive_id_step: Option<i64>,
}

/// A stockguard store on MySQL 8 or MariaDB. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MySqlStore {
    coalescer: Coalescer<MySqlShared>,
}

type MySqlTransaction = sqlx::Transaction<'static, MySql>;

const LEDGER_COLUMNS: &str = "id, sku, delta, stock_after, reason, idempotency_key, created_at";

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// `n` comma-separated copies of `item`, for building placeholder lists.
fn repeated(item: &str, n: usize) -> String {
    vec![item; n].join(", ")
}

impl MySqlStore {
    /// Detects the server flavour and opens the pool (failing fast if the server is
    /// unreachable). Does not migrate.
    pub async fn connect(config: MySqlConfig) -> Result<Self, DeductError> {
        sharding::check_bucket_count(config.shard_buckets)?;
        let options = MySqlConnectOptions::from_str(&config.url)
            .map_err(|e| DeductError::internal("parsing the MySQL URL", e))?;
        let flavor = detect_flavor(&options).await?;
        let statements = session_statements(flavor, &config);
        let pool = MySqlPoolOptions::new()
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
            .connect_with(options)
            .await
            .map_err(|e| error::fail(e, "connecting to MySQL"))?;
        let (autoinc_lock_mode, id_step): (i64, i64) = sqlx::query_as(
            "SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED), CAST(@@auto_increment_increment AS SIGNED)",
        )
        .fetch_one(&pool)
        .await
        .map_err(|e| error::fail(e, "reading auto-increment settings"))?;
        let consecutive_id_step = (autoinc_lock_mode <= 1 && id_step >= 1).then_some(id_step);
        let coalescer_config = config.coalescer;
        Ok(Self {
            coalescer: Coalescer::new(
                MySqlShared {
                    pool,
                    config,
                    flavor,
                    consecutive_id_step,
                },
                coalescer_config,
            ),
        })
    }

    /// Applies the embedded migrations.
    pub async fn migrate(&self) -> Result<(), DeductError> {
        MIGRATOR
            .run(&self.shared().pool)
            .await
            .map_err(|e| DeductError::internal("running migrations", e))
    }

    /// The pool, for tests and tools that need raw SQL.
    pub fn pool(&self) -> &MySqlPool {
        &self.shared().pool
    }

    /// The group-commit queue (for metrics).
    pub fn coalescer(&self) -> &Coalescer<MySqlShared> {
        &self.coalescer
    }

    /// Which server this store talks to.
    pub fn flavor(&self) -> ServerFlavor {
        self.shared().flavor
    }

    fn shared(&self) -> &MySqlShared {
        self.coalescer.executor()
    }
}

/// One short-lived connection to ask the server what it is.
async fn detect_flavor(options: &MySqlConnectOptions) -> Result<ServerFlavor, DeductError> {
    let mut connection = sqlx::MySqlConnection::connect_with(options)
        .await
        .map_err(|e| error::fail(e, "connecting to MySQL"))?;
    let version: String = sqlx::query_scalar("SELECT VERSION()")
        .fetch_one(&mut connection)
        .await
        .map_err(|e| error::fail(e, "reading the server version"))?;
    connection
        .close()
        .await
        .map_err(|e| error::fail(e, "closing the version probe"))?;
    Ok(ServerFlavor::from_version(&version))
}

/// Ends a failed attempt's transaction explicitly. On a lock wait timeout (1205) InnoDB
/// undoes only the failed statement, not the transaction, unless the server runs with
/// `innodb_rollback_on_timeout`: the transaction's earlier writes and row locks would stay
/// until the connection's next use. Rolling back here releases them at once.
async fn roll_back(transaction: MySqlTransaction) {
    if let Err(error) = transaction.rollback().await {
        // The connection is likely broken; sqlx will not reuse a connection whose rollback
        // did not complete. The attempt's own error is what the caller needs to see.
        tracing::warn!(%error, "rolling back a failed attempt failed");
    }
}

/// Commits on success, rolls back explicitly on failure.
async fn finish<T>(
    transaction: MySqlTransaction,
    outcome: Result<T, AttemptError>,
) -> Result<T, AttemptError> {
    match outcome {
        Ok(value) => {
            transaction.commit().await.map_err(classify)?;
            Ok(value)
        }
        Err(error) => {
            roll_back(transaction).await;
            Err(error)
        }
    }
}

fn ledger_entry(row: &MySqlRow) -> Result<LedgerEntry, DeductError> {
    let read = |e| error::fail(e, "reading ledger");
    let sku: String = row.try_get("sku").map_err(read)?;
    let reason: String = row.try_get("reason").map_err(read)?;
    Ok(LedgerEntry {
        id: row.try_get("id").map_err(read)?,
        sku: SkuId::parse(sku).map_err(|e| DeductError::internal("stored sku id is invalid", e))?,
        delta: row.try_get("delta").map_err(read)?,
        stock_after: row.try_get("stock_after").map_err(read)?,
        reason: LedgerReason::from_db(&reason).ok_or(DeductError::Internal {
            context: "stored ledger reason is unknown",
            source: None,
        })?,
        idempotency_key: row.try_get("idempotency_key").map_err(read)?,
        created_at: row.try_get::<DateTime<Utc>, _>("created_at").map_err(read)?,
    })
}

/// Inserts one ledger row and returns its id. The foreign-key check takes a shared lock on
/// the SKU's inventory row: covered by the caller's own lock on it, except for a `Sharded`
/// bucket deduction, which holds only its bucket (hence the bucket-then-row lock order of
/// the paths that lock every bucket).
async fn insert_ledger_row(
    transaction: &mut MySqlTransaction,
    sku: &SkuId,
    delta: i64,
    stock_after: i64,
    reason: LedgerReason,
    idempotency_key: Option<&IdempotencyKey>,
) -> Result<i64, AttemptError> {
    let reason = match reason {
        LedgerReason::Deduct => "deduct",
        LedgerReason::Restock => "restock",
    };
    let done = sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES (?, ?, ?, ?, ?)",
    )
    .bind(sku.as_str())
    .bind(delta)
    .bind(stock_after)
    .bind(reason)
    .bind(idempotency_key.map(IdempotencyKey::as_str))
    .execute(&mut **transaction)
    .await
    .map_err(classify)?;
    i64::try_from(done.last_insert_id())
        .map_err(|e| DeductError::internal("ledger id does not fit in BIGINT", e).into())
}

/// Reads back the SKU's total after this transaction's write to its row: the row's stock
/// (a transaction always sees its own changes, and the `UPDATE` that preceded this holds the
/// row's exclusive lock, so the value is exactly the one this transaction wrote: the
/// replacement for `UPDATE … RETURNING`) plus, for a sharded SKU, its bucket stock.
async fn read_back_stock(transaction: &mut MySqlTransaction, sku: &SkuId) -> Result<i64, AttemptError> {
    let (row_stock, sharded): (i64, bool) =
        sqlx::query_as("SELECT stock, sharded FROM inventory WHERE sku = ?")
            .bind(sku.as_str())
            .fetch_one(&mut **transaction)
            .await
            .map_err(classify)?;
    Ok(row_stock + bucket_stock_if(sharded, transaction, sku).await?)
}

/// Units in a sharded SKU's buckets (0 for a SKU never sharded, without a query). Exact when
/// the caller holds the SKU row's exclusive lock: stock moves between the row and buckets only
/// under that lock, and a `Sharded` deduction not yet committed is still waiting for its
/// ledger insert's shared lock on the row, so it commits after the caller and belongs after it
/// in the ledger's order.
async fn bucket_stock_if(
    sharded: bool,
    transaction: &mut MySqlTransaction,
    sku: &SkuId,
) -> Result<i64, AttemptError> {
    if !sharded {
        return Ok(0);
    }
    // SUM over BIGINT is DECIMAL; CAST … AS SIGNED brings it back to BIGINT.
    sqlx::query_scalar("SELECT CAST(COALESCE(SUM(stock), 0) AS SIGNED) FROM inventory_bucket WHERE sku = ?")
        .bind(sku.as_str())
        .fetch_one(&mut **transaction)
        .await
        .map_err(classify)
}

impl MySqlShared {
    async fn begin(&self) -> Result<MySqlTransaction, AttemptError> {
        self.pool.begin().await.map_err(classify)
    }

    async fn find_key(&self, key: &IdempotencyKey) -> Result<Option<LedgerEntry>, AttemptError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key = ?"
        )))
        .bind(key.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        Ok(row.as_ref().map(ledger_entry).transpose()?)
    }

    /// Replays a committed key, if this request's key has one.
    async fn replay_if_used(&self, request: &DeductRequest) -> Result<Option<Receipt>, AttemptError> {
        let Some(key) = &request.idempotency_key else {
            return Ok(None);
        };
        match self.find_key(key).await? {
            Some(entry) => Ok(Some(replay(&entry, &request.sku, request.quantity, 1)?)),
            None => Ok(None),
        }
    }

    /// Tells `NotFound` from `InsufficientStock` after a conditional write matched no row.
    async fn explain_miss(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let stock: Option<i64> = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?")
            .bind(request.sku.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(classify)?;
        let requested = request.quantity.get();
        match stock {
            None => Err(DeductError::NotFound.into()),
            Some(available) if available < requested => {
                Err(DeductError::InsufficientStock { requested, available }.into())
            }
            // Restocked between the write and this read: the write may now succeed.
            Some(_) => Err(AttemptError::Retry(RetryCause::VersionMismatch)),
        }
    }

    /// Writes the ledger row of a deduction that left `remaining` units and builds its
    /// receipt.
    async fn log_deduction(
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
        remaining: i64,
        lock_wait_us: u64,
    ) -> Result<Receipt, AttemptError> {
        let ledger_id = insert_ledger_row(
            transaction,
            &request.sku,
            -request.quantity.get(),
            remaining,
            LedgerReason::Deduct,
            request.idempotency_key.as_ref(),
        )
        .await?;
        Ok(Self::receipt(request, ledger_id, remaining, lock_wait_us))
    }

    fn receipt(request: &DeductRequest, ledger_id: i64, remaining: i64, lock_wait_us: u64) -> Receipt {
        Receipt {
            sku: request.sku.clone(),
            quantity: request.quantity,
            ledger_id,
            remaining,
            attempts: 1,
            replayed: false,
            lock_wait_us,
        }
    }

    async fn locked_attempt(&self, request: &DeductRequest, no_wait: bool) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let mut transaction = self.begin().await?;
        let outcome = Self::locked_deduct(&mut transaction, request, no_wait).await;
        finish(transaction, outcome).await
    }

    async fn locked_deduct(
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
        no_wait: bool,
    ) -> Result<Receipt, AttemptError> {
        let lock_started = Instant::now();
        let select = if no_wait {
            "SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE NOWAIT"
        } else {
            "SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE"
        };
        let locked: Option<(i64, bool)> = sqlx::query_as(select)
            .bind(request.sku.as_str())
            .fetch_optional(&mut **transaction)
            .await
            .map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let requested = request.quantity.get();
        let Some((stock, sharded)) = locked else {
            return Err(DeductError::NotFound.into());
        };
        if stock < requested {
            return Err(DeductError::InsufficientStock {
                requested,
                available: stock,
            }
            .into());
        }
        // The application computes the new value from what it read under the lock. Without
        // the lock this is the classic lost update; the conformance suite catches it.
        let row_remaining = stock - requested;
        sqlx::query("UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?")
            .bind(row_remaining)
            .bind(request.sku.as_str())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        let remaining = row_remaining + bucket_stock_if(sharded, transaction, &request.sku).await?;
        Self::log_deduction(transaction, request, remaining, lock_wait_us).await
    }

    async fn optimistic_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        // Re-read on every attempt, outside any transaction: an autocommit read sees the
        // latest committed version, and comparing against a stale one can never succeed.
        let current: Option<(i64, i64, bool)> =
            sqlx::query_as("SELECT stock, version, sharded FROM inventory WHERE sku = ?")
                .bind(request.sku.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        let requested = request.quantity.get();
        let Some((stock, version, sharded)) = current else {
            return Err(DeductError::NotFound.into());
        };
        if stock < requested {
            return Err(DeductError::InsufficientStock {
                requested,
                available: stock,
            }
            .into());
        }
        let mut transaction = self.begin().await?;
        let outcome = Self::compare_and_set(&mut transaction, request, stock, version, sharded).await;
        finish(transaction, outcome).await
    }

    async fn compare_and_set(
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
        stock: i64,
        version: i64,
        sharded: bool,
    ) -> Result<Receipt, AttemptError> {
        let write_started = Instant::now();
        let requested = request.quantity.get();
        let row_remaining = stock - requested;
        let updated = sqlx::query(
            "UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ? AND version = ?",
        )
        .bind(row_remaining)
        .bind(request.sku.as_str())
        .bind(version)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if updated.rows_affected() == 0 {
            return Err(AttemptError::Retry(RetryCause::VersionMismatch));
        }
        // The version matched, so `sharded` (read with it) is current: spreading bumps it.
        let remaining = row_remaining + bucket_stock_if(sharded, transaction, &request.sku).await?;
        Self::log_deduction(transaction, request, remaining, micros(write_started.elapsed())).await
    }

    async fn guarded_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let mut transaction = self.begin().await?;
        let outcome = Self::guarded_deduct(&mut transaction, request).await;
        match finish(transaction, outcome).await? {
            Some(receipt) => Ok(receipt),
            None => self.explain_miss(request).await,
        }
    }

    /// `None` when the guard matched no row (unknown SKU or not enough stock); nothing was
    /// written then.
    async fn guarded_deduct(
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
    ) -> Result<Option<Receipt>, AttemptError> {
        let write_started = Instant::now();
        let requested = request.quantity.get();
        // The database checks and subtracts in one statement under the row lock, so the
        // guard holds however many requests race.
        let updated = sqlx::query(
            "UPDATE inventory SET stock = stock - ?, version = version + 1 WHERE sku = ? AND stock >= ?",
        )
        .bind(requested)
        .bind(request.sku.as_str())
        .bind(requested)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let remaining = read_back_stock(transaction, &request.sku).await?;
        Self::log_deduction(transaction, request, remaining, micros(write_started.elapsed()))
            .await
            .map(Some)
    }

    /// `Sharded`: take from the row while the SKU is unsharded and its row is free, or from
    /// a free bucket with room; else wait for one bucket with room; else the consistent path,
    /// which spreads the SKU over buckets (so a SKU is spread the first time two deductions
    /// meet on its row, or on its first deduction with `spread_eagerly`).
    async fn sharded_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let mut transaction = self.begin().await?;
        let outcome = self.bucket_deduct(&mut transaction, request).await;
        if let Some(receipt) = finish(transaction, outcome).await? {
            return Ok(receipt);
        }
        let mut transaction = self.begin().await?;
        let outcome = self.spread_deduct(&mut transaction, request).await;
        finish(transaction, outcome).await
    }

    /// Takes the request from the row of an unsharded SKU that no one holds, or from one
    /// bucket of a sharded SKU. `None` (nothing written) sends the caller to the consistent
    /// path: no bucket has room, or an unsharded SKU's row is busy, which is the signal to
    /// spread it (or `spread_eagerly` is set).
    async fn bucket_deduct(
        &self,
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
    ) -> Result<Option<Receipt>, AttemptError> {
        let started = Instant::now();
        let sku = request.sku.as_str();
        let requested = request.quantity.get();
        // A plain read (no lock) says whether the SKU is sharded, and gives the snapshot
        // total that a bucket deduction reports as its estimate.
        let current: Option<(i64, bool, i64)> = sqlx::query_as(
            "SELECT stock, sharded, \
                    CAST(COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED) \
             FROM inventory i WHERE i.sku = ?",
        )
        .bind(sku)
        .fetch_optional(&mut **transaction)
        .await
        .map_err(classify)?;
        let Some((_, sharded, _)) = current else {
            return Err(DeductError::NotFound.into());
        };
        if !sharded {
            if self.config.spread_eagerly {
                return Ok(None);
            }
            // Unsharded: take from the row if no one holds it. A busy row is the signal to
            // spread the SKU, which the consistent path does.
            let free_row: Option<(i64, bool)> =
                sqlx::query_as("SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE SKIP LOCKED")
                    .bind(sku)
                    .fetch_optional(&mut **transaction)
                    .await
                    .map_err(classify)?;
            match free_row {
                // Spread since the plain read: the consistent path handles it.
                None | Some((_, true)) => return Ok(None),
                Some((row_stock, false)) => {
                    // The row alone holds the stock, and it is ours.
                    if row_stock < requested {
                        return Err(DeductError::InsufficientStock {
                            requested,
                            available: row_stock,
                        }
                        .into());
                    }
                    let remaining = row_stock - requested;
                    sqlx::query("UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?")
                        .bind(remaining)
                        .bind(sku)
                        .execute(&mut **transaction)
                        .await
                        .map_err(classify)?;
                    return Self::log_deduction(transaction, request, remaining, micros(started.elapsed()))
                        .await
                        .map(Some);
                }
            }
        }
        // Sharded: no lock on the SKU row here. The ledger insert's foreign-key check takes a
        // shared lock on it after this transaction holds its bucket, which is why the
        // consistent paths lock buckets before the row (see `lock_buckets_then_sku`).
        // A free bucket with room, scanning from a random bucket and wrapping around. The
        // scan walks the primary key in order and stops at the first match, so it locks only
        // the bucket it returns (READ COMMITTED releases rows that fail the condition).
        let start: i64 = i64::from(rand::random_range(0..self.config.shard_buckets));
        let mut chosen: Option<i64> = None;
        for range in [
            "SELECT bucket FROM inventory_bucket WHERE sku = ? AND bucket >= ? AND stock >= ? \
             ORDER BY bucket LIMIT 1 FOR UPDATE SKIP LOCKED",
            "SELECT bucket FROM inventory_bucket WHERE sku = ? AND bucket < ? AND stock >= ? \
             ORDER BY bucket LIMIT 1 FOR UPDATE SKIP LOCKED",
        ] {
            chosen = sqlx::query_scalar(range)
                .bind(sku)
                .bind(start)
                .bind(requested)
                .fetch_optional(&mut **transaction)
                .await
                .map_err(classify)?;
            if chosen.is_some() {
                break;
            }
        }
        let taken = match chosen {
            // Locked and checked: the decrement cannot miss.
            Some(bucket) => Self::take_from_bucket(transaction, sku, bucket, requested).await?,
            None => {
                // Every bucket with room is busy: wait for one of them, chosen at random. A
                // guarded single-row UPDATE waits for that row only and re-checks its stock.
                let candidate: Option<i64> = sqlx::query_scalar(
                    "SELECT bucket FROM inventory_bucket WHERE sku = ? AND stock >= ? ORDER BY RAND() LIMIT 1",
                )
                .bind(sku)
                .bind(requested)
                .fetch_optional(&mut **transaction)
                .await
                .map_err(classify)?;
                match candidate {
                    Some(bucket) => Self::take_from_bucket(transaction, sku, bucket, requested).await?,
                    None => false,
                }
            }
        };
        if !taken {
            return Ok(None);
        }
        // The snapshot's total less this deduction: other deductions may be in flight, so an
        // estimate (see `Strategy::Sharded`).
        let (row_stock, _, bucket_stock) = current.unwrap_or_default();
        let remaining = (row_stock + bucket_stock - requested).max(0);
        Self::log_deduction(transaction, request, remaining, micros(started.elapsed()))
            .await
            .map(Some)
    }

    /// Decrements one bucket if it still has room; false when it does not.
    async fn take_from_bucket(
        transaction: &mut MySqlTransaction,
        sku: &str,
        bucket: i64,
        requested: i64,
    ) -> Result<bool, AttemptError> {
        let updated = sqlx::query(
            "UPDATE inventory_bucket SET stock = stock - ? WHERE sku = ? AND bucket = ? AND stock >= ?",
        )
        .bind(requested)
        .bind(sku)
        .bind(bucket)
        .bind(requested)
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        Ok(updated.rows_affected() == 1)
    }

    /// Locks every bucket of SKU `sku` in bucket order, then its row. Buckets first: a
    /// `Sharded` deduction holds its bucket when its ledger insert's foreign-key check asks
    /// for a shared lock on the row, so holding the row while waiting for a bucket would
    /// deadlock. Buckets are created only under the row's lock; if some appeared between the
    /// two steps (another transaction spread the SKU meanwhile), this attempt retries rather
    /// than wait for them while holding the row. `None` when the SKU does not exist.
    async fn lock_buckets_then_sku(
        transaction: &mut MySqlTransaction,
        sku: &SkuId,
    ) -> Result<Option<(i64, Vec<(i64, i64)>)>, AttemptError> {
        let buckets: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT bucket, stock FROM inventory_bucket WHERE sku = ? ORDER BY bucket FOR UPDATE",
        )
        .bind(sku.as_str())
        .fetch_all(&mut **transaction)
        .await
        .map_err(classify)?;
        let row: Option<(i64, i64)> = sqlx::query_as(
            "SELECT stock, (SELECT COUNT(*) FROM inventory_bucket b WHERE b.sku = i.sku) \
             FROM inventory i WHERE i.sku = ? FOR UPDATE",
        )
        .bind(sku.as_str())
        .fetch_optional(&mut **transaction)
        .await
        .map_err(classify)?;
        let Some((row_stock, bucket_rows)) = row else {
            return Ok(None);
        };
        if usize::try_from(bucket_rows).ok() != Some(buckets.len()) {
            return Err(AttemptError::Retry(RetryCause::BucketsChanged));
        }
        Ok(Some((row_stock, buckets)))
    }

    /// The consistent `Sharded` path: with the SKU and all its buckets locked, the total is
    /// exact, so a refusal here is exact too. What is left is spread evenly over the buckets.
    async fn spread_deduct(
        &self,
        transaction: &mut MySqlTransaction,
        request: &DeductRequest,
    ) -> Result<Receipt, AttemptError> {
        let lock_started = Instant::now();
        let Some((row_stock, buckets)) = Self::lock_buckets_then_sku(transaction, &request.sku).await? else {
            return Err(DeductError::NotFound.into());
        };
        let lock_wait_us = micros(lock_started.elapsed());
        let total = row_stock + buckets.iter().map(|(_, stock)| stock).sum::<i64>();
        let requested = request.quantity.get();
        if total < requested {
            return Err(DeductError::InsufficientStock {
                requested,
                available: total,
            }
            .into());
        }
        let left = total - requested;
        let rows = sharding::respread(
            left,
            self.config.shard_buckets,
            buckets.iter().map(|(bucket, _)| *bucket),
        );
        for chunk in rows.chunks(ROWS_PER_STATEMENT_MAX) {
            let sql = format!(
                "INSERT INTO inventory_bucket (sku, bucket, stock) VALUES {} \
                 ON DUPLICATE KEY UPDATE stock = VALUES(stock)",
                repeated("(?, ?, ?)", chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (bucket, share) in chunk {
                query = query.bind(request.sku.as_str()).bind(*bucket).bind(*share);
            }
            query.execute(&mut **transaction).await.map_err(classify)?;
        }
        sqlx::query("UPDATE inventory SET stock = 0, sharded = TRUE, version = version + 1 WHERE sku = ?")
            .bind(request.sku.as_str())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        Self::log_deduction(transaction, request, left, lock_wait_us).await
    }

    /// Before a row-based strategy refuses `requested` units: is the SKU's total short, or
    /// could buckets cover it? If they could, they are emptied into the row (no ledger row:
    /// the total is unchanged) and the caller runs its request again.
    async fn gather(&self, sku: &SkuId, requested: i64) -> Result<Gathered, DeductError> {
        // One statement, one read view: a total below `requested` here was the total at an
        // instant, so refusing on it is exact. Most SKUs have no buckets and stop here.
        let totals: Option<(i64, i64)> = sqlx::query_as(
            "SELECT i.stock, CAST(COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED) \
             FROM inventory i WHERE i.sku = ?",
        )
        .bind(sku.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(|e| error::fail(e, "reading a sku's total"))?;
        let Some((row_stock, bucket_stock)) = totals else {
            return Err(DeductError::NotFound);
        };
        if let Some(decided) = Gathered::from_snapshot(row_stock, bucket_stock, requested) {
            return Ok(decided);
        }
        let (gathered, _) = self
            .config
            .retry
            .run(|_| async {
                let mut transaction = self.begin().await?;
                let outcome = Self::gather_in(&mut transaction, sku, requested).await;
                finish(transaction, outcome).await
            })
            .await?;
        Ok(gathered)
    }

    async fn gather_in(
        transaction: &mut MySqlTransaction,
        sku: &SkuId,
        requested: i64,
    ) -> Result<Gathered, AttemptError> {
        let Some((row_stock, buckets)) = Self::lock_buckets_then_sku(transaction, sku).await? else {
            return Err(DeductError::NotFound.into());
        };
        let bucket_stock: i64 = buckets.iter().map(|(_, stock)| stock).sum();
        if row_stock + bucket_stock < requested {
            return Ok(Gathered::Short {
                total: row_stock + bucket_stock,
            });
        }
        sqlx::query("UPDATE inventory_bucket SET stock = 0 WHERE sku = ? AND stock > 0")
            .bind(sku.as_str())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        sqlx::query("UPDATE inventory SET stock = stock + ?, version = version + 1 WHERE sku = ?")
            .bind(bucket_stock)
            .bind(sku.as_str())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        Ok(Gathered::Retry)
    }

    /// `None` when the guard matched no row (unknown SKU or the result would pass `STOCK_MAX`).
    async fn restock_in(
        transaction: &mut MySqlTransaction,
        sku: &SkuId,
        quantity: Quantity,
    ) -> Result<Option<(i64, i64)>, AttemptError> {
        let updated = sqlx::query(
            "UPDATE inventory SET stock = stock + ?, version = version + 1 WHERE sku = ? AND stock <= ? - ?",
        )
        .bind(quantity.get())
        .bind(sku.as_str())
        .bind(STOCK_MAX)
        .bind(quantity.get())
        .execute(&mut **transaction)
        .await
        .map_err(classify)?;
        if updated.rows_affected() == 0 {
            return Ok(None);
        }
        let stock_after = read_back_stock(transaction, sku).await?;
        let ledger_id = insert_ledger_row(
            transaction,
            sku,
            quantity.get(),
            stock_after,
            LedgerReason::Restock,
            None,
        )
        .await?;
        Ok(Some((ledger_id, stock_after)))
    }

    /// Ledger rows already committed under any of `keys`.
    async fn prior_entries(
        transaction: &mut MySqlTransaction,
        keys: &[&str],
    ) -> Result<Vec<LedgerEntry>, AttemptError> {
        let mut entries = Vec::new();
        for chunk in keys.chunks(ROWS_PER_STATEMENT_MAX) {
            let sql = format!(
                "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key IN ({})",
                repeated("?", chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for key in chunk {
                query = query.bind(*key);
            }
            let rows = query.fetch_all(&mut **transaction).await.map_err(classify)?;
            for row in &rows {
                entries.push(ledger_entry(row)?);
            }
        }
        Ok(entries)
    }

    /// Writes a planned batch and returns the ledger id of each planned row, in plan order.
    async fn write_batch(
        &self,
        transaction: &mut MySqlTransaction,
        sku: &SkuId,
        plan: &BatchPlan,
    ) -> Result<Vec<i64>, AttemptError> {
        sqlx::query("UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?")
            .bind(plan.stock_after)
            .bind(sku.as_str())
            .execute(&mut **transaction)
            .await
            .map_err(classify)?;
        let mut first_id: Option<u64> = None;
        let mut consecutive_ids = Vec::with_capacity(plan.new_rows.len());
        for chunk in plan.new_rows.chunks(ROWS_PER_STATEMENT_MAX) {
            let sql = format!(
                "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES {}",
                repeated("(?, ?, ?, 'deduct', ?)", chunk.len())
            );
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
            for row in chunk {
                query = query
                    .bind(sku.as_str())
                    .bind(-row.quantity)
                    .bind(row.stock_after)
                    .bind(row.idempotency_key.as_deref());
            }
            let done = query.execute(&mut **transaction).await.map_err(classify)?;
            // LAST_INSERT_ID() of a multi-row INSERT is the id of its first row.
            first_id.get_or_insert(done.last_insert_id());
            if let Some(step) = self.consecutive_id_step {
                let chunk_first = i64::try_from(done.last_insert_id())
                    .map_err(|e| DeductError::internal("ledger id does not fit in BIGINT", e))?;
                consecutive_ids.extend((0..).take(chunk.len()).map(|i: i64| chunk_first + i * step));
            }
        }
        if self.consecutive_id_step.is_some() {
            return Ok(consecutive_ids);
        }
        let first_id = first_id.ok_or(DeductError::Internal {
            context: "wrote a batch with no ledger rows",
            source: None,
        })?;
        // Ids are not assumed consecutive (auto_increment_increment, Galera, interleaved
        // lock mode). Instead: every ledger writer locks the SKU's inventory row before or
        // during its INSERT (a `Sharded` bucket deduction through the foreign-key check), and
        // we hold that lock, so no other transaction can have committed a row for this SKU
        // with an id at or above our first one. Those rows are exactly ours.
        let rows: Vec<(i64, i64)> = sqlx::query_as(
            "SELECT id, stock_after FROM inventory_ledger WHERE sku = ? AND id >= ? ORDER BY id",
        )
        .bind(sku.as_str())
        .bind(first_id)
        .fetch_all(&mut **transaction)
        .await
        .map_err(classify)?;
        if rows.len() != plan.new_rows.len() {
            return Err(DeductError::Internal {
                context: "batch read-back found a different number of ledger rows than planned",
                source: None,
            }
            .into());
        }
        // stock_after strictly decreases within a batch, so it identifies each row.
        let by_stock_after: HashMap<i64, i64> = rows.into_iter().map(|(id, after)| (after, id)).collect();
        plan.new_rows
            .iter()
            .map(|row| {
                by_stock_after.get(&row.stock_after).copied().ok_or_else(|| {
                    DeductError::Internal {
                        context: "batch read-back is missing a planned ledger row",
                        source: None,
                    }
                    .into()
                })
            })
            .collect()
    }

    async fn batch_in(
        &self,
        transaction: &mut MySqlTransaction,
        sku: &SkuId,
        items: &[BatchItem],
    ) -> Result<Vec<Result<Receipt, DeductError>>, AttemptError> {
        let lock_started = Instant::now();
        let locked: Option<(i64, bool)> =
            sqlx::query_as("SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE")
                .bind(sku.as_str())
                .fetch_optional(&mut **transaction)
                .await
                .map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let stock = locked.map(|(row_stock, _)| row_stock);
        let bucket_stock =
            bucket_stock_if(locked.is_some_and(|(_, sharded)| sharded), transaction, sku).await?;
        let keys: Vec<&str> = items
            .iter()
            .filter_map(|i| i.idempotency_key.as_ref().map(IdempotencyKey::as_str))
            .collect();
        let prior = Self::prior_entries(transaction, &keys).await?;
        let mut plan = BatchPlan::new(sku, stock, items, &prior);
        plan.report_total_stock(bucket_stock);
        // An unknown SKU plans no rows, so nothing is written.
        let ledger_ids = if plan.new_rows.is_empty() {
            Vec::new()
        } else {
            self.write_batch(transaction, sku, &plan).await?
        };
        Ok(plan.into_results(sku, items, &ledger_ids, lock_wait_us))
    }
}

impl BatchExecutor for MySqlShared {
    async fn execute_batch(
        &self,
        sku: &SkuId,
        items: &[BatchItem],
    ) -> Result<Vec<Result<Receipt, DeductError>>, AttemptError> {
        // A batch of one is an uncontended SKU: the guarded path gives the same result with
        // fewer round trips (no separate lock read, no ledger read-back by id range).
        if let [item] = items {
            let request = item.to_request(sku, Strategy::Guarded);
            return single_item_outcome(self.guarded_attempt(&request).await);
        }
        let mut transaction = self.begin().await?;
        let outcome = self.batch_in(&mut transaction, sku, items).await;
        finish(transaction, outcome).await
    }
}

impl MySqlStore {
    /// The strategies that take from the SKU row (every one but `Sharded`), one run.
    async fn deduct_from_row(&self, request: &DeductRequest) -> Result<Receipt, DeductError> {
        let shared = self.shared();
        let retry = &shared.config.retry;
        let attempt_result = match request.strategy {
            Strategy::Coalesced => return self.coalescer.submit(request.clone()).await,
            Strategy::Pessimistic => retry.run(|_| shared.locked_attempt(request, false)).await,
            Strategy::NoWait => retry.run(|_| shared.locked_attempt(request, true)).await,
            Strategy::Optimistic => retry.run(|_| shared.optimistic_attempt(request)).await,
            Strategy::Guarded => retry.run(|_| shared.guarded_attempt(request)).await,
            other => {
                return Err(InvalidInput::UnsupportedStrategy {
                    strategy: other,
                    backend: shared.flavor.backend(),
                }
                .into());
            }
        };
        let (mut receipt, attempts) = attempt_result?;
        receipt.attempts = attempts;
        Ok(receipt)
    }
}

impl InventoryStore for MySqlStore {
    fn backend(&self) -> &'static str {
        self.shared().flavor.backend()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            strategies: Strategy::ALL.to_vec(),
            row_level_locking: true,
        }
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        stockguard_core::check_stock_level(initial_stock)?;
        let created = sqlx::query("INSERT INTO inventory (sku, stock, initial_stock) VALUES (?, ?, ?)")
            .bind(sku.as_str())
            .bind(initial_stock)
            .bind(initial_stock)
            .execute(&self.shared().pool)
            .await;
        match created {
            Ok(_) => Ok(StockLevel {
                sku: sku.clone(),
                stock: initial_stock,
                initial_stock,
            }),
            Err(e)
                if error::error_number(&e) == Some(error::DUPLICATE_ENTRY)
                    && error::duplicate_key_name(&e) == Some("PRIMARY") =>
            {
                Err(DeductError::AlreadyExists)
            }
            Err(e) => Err(error::fail(e, "creating a sku")),
        }
    }

    async fn restock(&self, sku: &SkuId, quantity: Quantity) -> Result<RestockReceipt, DeductError> {
        let shared = self.shared();
        let (written, _) = shared
            .config
            .retry
            .run(|_| async {
                let mut transaction = shared.begin().await?;
                let outcome = MySqlShared::restock_in(&mut transaction, sku, quantity).await;
                finish(transaction, outcome).await
            })
            .await?;
        match written {
            Some((ledger_id, stock_after)) => Ok(RestockReceipt {
                sku: sku.clone(),
                quantity,
                stock_after,
                ledger_id,
            }),
            None => {
                let stock = self.stock(sku).await?.stock;
                Err(InvalidInput::StockOutOfRange {
                    given: stock + quantity.get(),
                    max: STOCK_MAX,
                }
                .into())
            }
        }
    }

    async fn deduct(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        let shared = self.shared();
        if request.strategy == Strategy::Sharded {
            let (mut receipt, attempts) = shared
                .config
                .retry
                .run(|_| shared.sharded_attempt(&request))
                .await?;
            receipt.attempts = attempts;
            return Ok(receipt);
        }
        // The other strategies see only the SKU row; buckets count before any refusal.
        sharding::refuse_only_on_total(
            request.quantity.get(),
            || self.deduct_from_row(&request),
            |requested| shared.gather(&request.sku, requested),
        )
        .await
    }
    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as(
                "SELECT CAST(stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED), \
                        initial_stock FROM inventory i WHERE i.sku = ?",
            )
                .bind(sku.as_str())
                .fetch_optional(&self.shared().pool)
                .await
                .map_err(|e| error::fail(e, "reading stock"))?;
        let (stock, initial_stock) = row.ok_or(DeductError::NotFound)?;
        Ok(StockLevel {
            sku: sku.clone(),
            stock,
            initial_stock,
        })
    }

    async fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE sku = ? AND id > ? ORDER BY id LIMIT ?"
        )))
        .bind(sku.as_str())
        .bind(page.after_id.unwrap_or(0))
        .bind(i64::from(page.limit))
        .fetch_all(&self.shared().pool)
        .await
        .map_err(|e| error::fail(e, "reading the ledger"))?;
        if rows.is_empty() {
            // Distinguish "no rows yet" from "no such SKU".
            self.stock(sku).await?;
        }
        rows.iter().map(ledger_entry).collect()
    }

    async fn snapshot(&self) -> Result<Vec<SkuSnapshot>, DeductError> {
        // SUM over BIGINT is DECIMAL in MySQL; CAST … AS SIGNED brings it back to BIGINT.
        let rows: Vec<StoredSnapshotRow> = sqlx::query_as(
            "SELECT i.sku, i.initial_stock, CAST(i.stock + COALESCE(b.bucket_stock, 0) AS SIGNED), \
                    CAST(COALESCE(l.delta_sum, 0) AS SIGNED), CAST(COALESCE(l.row_count, 0) AS SIGNED) \
             FROM inventory i \
             LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count \
                        FROM inventory_ledger GROUP BY sku) l \
               ON l.sku = i.sku \
             LEFT JOIN (SELECT sku, SUM(stock) AS bucket_stock FROM inventory_bucket GROUP BY sku) b \
               ON b.sku = i.sku \
             ORDER BY i.sku",
        )
        .fetch_all(&self.shared().pool)
        .await
        .map_err(|e| error::fail(e, "auditing"))?;
        SkuSnapshot::from_stored_rows(rows)
    }

    async fn ping(&self) -> Result<(), DeductError> {
        sqlx::query("SELECT 1")
            .execute(&self.shared().pool)
            .await
            .map(|_| ())
            .map_err(|e| error::fail(e, "pinging MySQL"))
    }

    fn pool_status(&self) -> PoolStatus {
        let pool = &self.shared().pool;
        PoolStatus {
            size: pool.size(),
            idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
            max_size: self.shared().config.max_connections,
        }
    }

    async fn close(&self) {
        self.coalescer.close().await;
        self.shared().pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_is_read_from_the_version_string() {
        assert_eq!(
            ServerFlavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            ServerFlavor::MariaDb
        );
        assert_eq!(ServerFlavor::from_version("8.4.3"), ServerFlavor::MySql);
    }

    #[test]
    fn session_settings_round_the_lock_wait_up_to_whole_seconds() {
        let mut config = MySqlConfig::new("mysql://unused");
        config.lock_timeout = Duration::from_millis(1);
        config.statement_timeout = Duration::from_millis(2_500);
        let statements = session_statements(ServerFlavor::MariaDb, &config);
        assert!(statements.contains(&"SET SESSION innodb_lock_wait_timeout = 1".to_owned()));
        assert!(statements.contains(&"SET SESSION max_statement_time = 2.500".to_owned()));
        config.lock_timeout = Duration::from_millis(2_001);
        let statements = session_statements(ServerFlavor::MySql, &config);
        assert!(statements.contains(&"SET SESSION innodb_lock_wait_timeout = 3".to_owned()));
        assert!(statements.contains(&"SET SESSION max_execution_time = 2500".to_owned()));
    }
}
