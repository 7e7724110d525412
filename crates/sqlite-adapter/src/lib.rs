//! Embedded SQLite adapter for stockguard: one database file, WAL journal, no server. It owns
//! the SQL and maps SQLite result codes onto [`DeductError`]; the semantics live in
//! `stockguard-core`.
//!
//! SQLite has no row locks: one connection at a time may write the whole database, and
//! `BEGIN IMMEDIATE` takes that write lock up front. Every write path below starts with it,
//! so no transaction ever reads and then tries to upgrade to a writer (which SQLite refuses
//! with `SQLITE_BUSY_SNAPSHOT` without waiting).
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN IMMEDIATE` (waits up to `busy_timeout`); `SELECT stock`; check; `UPDATE … SET stock = <read − q>`; ledger `INSERT`; `COMMIT` |
//! | `NoWait` | as `Pessimistic`, with the connection's busy timeout set to 0 for the `BEGIN IMMEDIATE` only (`SQLITE_BUSY` → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version` (autocommit); then `BEGIN IMMEDIATE; UPDATE … WHERE version = ?`; ledger `INSERT`; `COMMIT`; retried on a miss |
//! | `Guarded` | `BEGIN IMMEDIATE; UPDATE … SET stock = stock − q WHERE stock >= q RETURNING stock`; ledger `INSERT`; `COMMIT` |
//! | `Coalesced` | per batch: `BEGIN IMMEDIATE; SELECT stock;` one `UPDATE`; multi-row ledger `INSERT … RETURNING`; `COMMIT` |
//!
//! See `docs/sqlite.md` for the reasoning, durability settings and limits.

mod error;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    Sqlite, SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Row, Transaction};
use stockguard_core::{
    AttemptError, BatchExecutor, BatchItem, BatchPlan, Capabilities, Coalescer, CoalescerConfig, DeductError,
    DeductRequest, IdempotencyKey, InvalidInput, InventoryStore, LedgerEntry, LedgerPage, LedgerReason,
    NewLedgerRow, PoolStatus, Quantity, Receipt, RestockReceipt, RetryCause, RetryPolicy, STOCK_MAX, SkuId,
    SkuSnapshot, StockLevel, StoredSnapshotRow, Strategy, model::replay,
};

pub use error::classify;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Ledger rows per multi-row `INSERT` in a coalesced batch. Each row binds 4 parameters, so
/// a statement binds at most 800, far below SQLite's limit of 32 766 host parameters.
const LEDGER_ROWS_PER_INSERT: usize = 200;

/// Idempotency keys per `IN (…)` lookup in a coalesced batch (one parameter each).
const KEYS_PER_LOOKUP: usize = 500;

/// Every limit of the adapter, explicit.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file; created (with its directory's permissions) when missing.
    pub path: PathBuf,
    /// Most connections in the pool. SQLite admits one writer at a time whatever this is;
    /// more connections only help concurrent reads.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a writer waits for the database's write lock (SQLite's busy handler) before
    /// `LockTimeout`. `NoWait` does not wait at all.
    pub busy_timeout: Duration,
    /// Retries for version misses, stale snapshots and idempotency races.
    pub retry: RetryPolicy,
    /// Group-commit limits for `Coalesced`.
    pub coalescer: CoalescerConfig,
}

impl SqliteConfig {
    /// Defaults for everything but the file path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            // One writer at a time: a few connections serve the concurrent readers, and more
            // would only add writers polling the busy handler for the same lock.
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            coalescer: CoalescerConfig::default(),
        }
    }
}

/// The shared state behind a [`SqliteStore`]; also the coalescer's batch executor.
#[derive(Debug)]
pub struct SqliteShared {
    pool: SqlitePool,
    config: SqliteConfig,
}

/// A stockguard store on an embedded SQLite file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    coalescer: Coalescer<SqliteShared>,
}

const LEDGER_COLUMNS: &str = "id, sku, delta, stock_after, reason, idempotency_key, created_at";

/// Starts a write transaction holding the database's write lock from its first statement.
const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// SQLite takes the busy timeout as a C `int` of milliseconds.
const BUSY_TIMEOUT_MAX_MS: u128 = 2_147_483_647;

fn busy_timeout_pragma(busy_timeout: Duration) -> String {
    format!(
        "PRAGMA busy_timeout = {}",
        busy_timeout.as_millis().min(BUSY_TIMEOUT_MAX_MS)
    )
}

impl SqliteStore {
    /// Opens (creating if missing) the database file and the pool. Does not migrate.
    ///
    /// Every connection runs in WAL mode (readers never block the writer, nor it them),
    /// with `synchronous = FULL` (a commit is durable once `deduct` returns, even across a
    /// power loss), foreign keys on, and the configured busy timeout.
    pub async fn connect(config: SqliteConfig) -> Result<Self, DeductError> {
        let options = SqliteConnectOptions::new()
            .filename(&config.path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(config.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| error::fail(e, "opening the SQLite database"))?;
        let coalescer_config = config.coalescer;
        Ok(Self {
            coalescer: Coalescer::new(SqliteShared { pool, config }, coalescer_config),
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
    pub fn pool(&self) -> &SqlitePool {
        &self.shared().pool
    }

    /// The group-commit queue (for metrics).
    pub fn coalescer(&self) -> &Coalescer<SqliteShared> {
        &self.coalescer
    }

    fn shared(&self) -> &SqliteShared {
        self.coalescer.executor()
    }
}

fn ledger_entry(row: &SqliteRow) -> Result<LedgerEntry, DeductError> {
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

/// A pooled connection whose busy timeout is temporarily zero. If the attempt is cancelled
/// or fails before the timeout is restored, the connection is closed instead of going back
/// to the pool, so no later `Pessimistic` request can inherit a zero wait.
struct ZeroBusyWait {
    conn: PoolConnection<Sqlite>,
    restored: bool,
}

impl Drop for ZeroBusyWait {
    fn drop(&mut self) {
        if !self.restored {
            self.conn.close_on_drop();
        }
    }
}

impl std::fmt::Debug for ZeroBusyWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ZeroBusyWait")
            .field("restored", &self.restored)
            .finish()
    }
}

async fn find_key(
    conn: &mut SqliteConnection,
    key: &IdempotencyKey,
) -> Result<Option<LedgerEntry>, AttemptError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key = ?1"
    )))
    .bind(key.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(row.as_ref().map(ledger_entry).transpose()?)
}

/// Replays a committed key, if this request's key has one.
async fn replay_if_used(
    conn: &mut SqliteConnection,
    request: &DeductRequest,
) -> Result<Option<Receipt>, AttemptError> {
    let Some(key) = &request.idempotency_key else {
        return Ok(None);
    };
    match find_key(conn, key).await? {
        Some(entry) => Ok(Some(replay(&entry, &request.sku, request.quantity, 1)?)),
        None => Ok(None),
    }
}

async fn read_stock(conn: &mut SqliteConnection, sku: &SkuId) -> Result<Option<i64>, AttemptError> {
    sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?1")
        .bind(sku.as_str())
        .fetch_optional(&mut *conn)
        .await
        .map_err(classify)
}

fn check_fits(request: &DeductRequest, stock: Option<i64>) -> Result<i64, AttemptError> {
    let requested = request.quantity.get();
    let Some(stock) = stock else {
        return Err(DeductError::NotFound.into());
    };
    if stock < requested {
        return Err(DeductError::InsufficientStock {
            requested,
            available: stock,
        }
        .into());
    }
    Ok(stock)
}

/// Appends the deduction's ledger row; the caller has already written the stock.
async fn insert_deduct_row(
    conn: &mut SqliteConnection,
    request: &DeductRequest,
    stock_after: i64,
    lock_wait_us: u64,
) -> Result<Receipt, AttemptError> {
    let ledger_id: i64 = sqlx::query_scalar(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
         VALUES (?1, ?2, ?3, 'deduct', ?4) RETURNING id",
    )
    .bind(request.sku.as_str())
    .bind(-request.quantity.get())
    .bind(stock_after)
    .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
    .fetch_one(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(Receipt {
        sku: request.sku.clone(),
        quantity: request.quantity,
        ledger_id,
        remaining: stock_after,
        attempts: 1,
        replayed: false,
        lock_wait_us,
    })
}

/// The pessimistic body, run inside a transaction that already holds the write lock: read,
/// check, write the value computed from the read, log.
async fn deduct_under_write_lock(
    conn: &mut SqliteConnection,
    request: &DeductRequest,
    lock_wait_us: u64,
) -> Result<Receipt, AttemptError> {
    // Under the write lock no other writer can commit this key between check and insert.
    if let Some(receipt) = replay_if_used(conn, request).await? {
        return Ok(receipt);
    }
    let stock = check_fits(request, read_stock(conn, &request.sku).await?)?;
    let stock_after = stock - request.quantity.get();
    // The application computes the new value from what it read. Without the write lock
    // taken before the read this is the classic lost update; the conformance suite catches it.
    sqlx::query("UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1")
        .bind(request.sku.as_str())
        .bind(stock_after)
        .execute(&mut *conn)
        .await
        .map_err(classify)?;
    insert_deduct_row(conn, request, stock_after, lock_wait_us).await
}

/// Ends a write transaction: commits on success, and on failure rolls back *before*
/// returning. Dropping a sqlx transaction only queues its ROLLBACK, and until that runs the
/// database's write lock is still held, so the caller's very next request could find the
/// database busy (and a `NoWait` request would fail with `LockTimeout` for no reason).
async fn settle<T>(tx: Transaction<'_, Sqlite>, outcome: Result<T, AttemptError>) -> Result<T, AttemptError> {
    match outcome {
        Ok(value) => {
            tx.commit().await.map_err(classify)?;
            Ok(value)
        }
        Err(error) => {
            if let Err(rollback) = tx.rollback().await {
                // The connection is unusable; sqlx closes it. The request's own error is
                // the one to report, and nothing was committed.
                tracing::warn!(error = %rollback, "rolling back a failed write transaction");
            }
            Err(error)
        }
    }
}

impl SqliteShared {
    async fn acquire(&self) -> Result<PoolConnection<Sqlite>, AttemptError> {
        self.pool.acquire().await.map_err(classify)
    }

    async fn pessimistic_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let mut conn = self.acquire().await?;
        let lock_started = Instant::now();
        // Waits in SQLite's busy handler for at most `busy_timeout`, then SQLITE_BUSY.
        let mut tx = conn.begin_with(BEGIN_WRITE).await.map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let outcome = deduct_under_write_lock(&mut tx, request, lock_wait_us).await;
        settle(tx, outcome).await
    }

    /// `NoWait`: SQLite has no per-statement NOWAIT, so the connection's busy handler is
    /// switched off (`busy_timeout = 0`) for the `BEGIN IMMEDIATE` alone: a held write lock
    /// makes it fail with `SQLITE_BUSY` at once. The timeout is restored before any other
    /// statement runs; the guard closes the connection if that never happens.
    async fn no_wait_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let mut guard = ZeroBusyWait {
            conn: self.acquire().await?,
            restored: true,
        };
        let restore = busy_timeout_pragma(self.config.busy_timeout);
        guard.restored = false;
        sqlx::query("PRAGMA busy_timeout = 0")
            .execute(&mut *guard.conn)
            .await
            .map_err(classify)?;
        let lock_started = Instant::now();
        let busy = match guard.conn.begin_with(BEGIN_WRITE).await {
            Ok(mut tx) => {
                let lock_wait_us = micros(lock_started.elapsed());
                sqlx::query(sqlx::AssertSqlSafe(restore))
                    .execute(&mut *tx)
                    .await
                    .map_err(classify)?;
                guard.restored = true;
                let outcome = deduct_under_write_lock(&mut tx, request, lock_wait_us).await;
                return settle(tx, outcome).await;
            }
            Err(busy) => busy,
        };
        sqlx::query(sqlx::AssertSqlSafe(restore))
            .execute(&mut *guard.conn)
            .await
            .map_err(classify)?;
        guard.restored = true;
        Err(classify(busy))
    }

    async fn optimistic_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let mut conn = self.acquire().await?;
        if let Some(receipt) = replay_if_used(&mut conn, request).await? {
            return Ok(receipt);
        }
        // Re-read on every attempt, outside any transaction: comparing against a stale
        // version can never succeed.
        let current: Option<(i64, i64)> =
            sqlx::query_as("SELECT stock, version FROM inventory WHERE sku = ?1")
                .bind(request.sku.as_str())
                .fetch_optional(&mut *conn)
                .await
                .map_err(classify)?;
        let Some((stock, version)) = current else {
            return Err(DeductError::NotFound.into());
        };
        let stock = check_fits(request, Some(stock))?;
        let stock_after = stock - request.quantity.get();
        // The compare-and-set runs in a write transaction started IMMEDIATE, so the UPDATE
        // and the ledger INSERT commit together and the transaction never has to upgrade
        // from reader to writer.
        let lock_started = Instant::now();
        let mut tx = conn.begin_with(BEGIN_WRITE).await.map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let outcome = compare_and_set(&mut tx, request, stock_after, version, lock_wait_us).await;
        settle(tx, outcome).await
    }

    async fn guarded_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let mut conn = self.acquire().await?;
        let lock_started = Instant::now();
        let mut tx = conn.begin_with(BEGIN_WRITE).await.map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let outcome = guarded_write(&mut tx, request, lock_wait_us).await;
        settle(tx, outcome).await
    }
}

/// Committed ledger rows for any of `keys`, looked up in chunks of [`KEYS_PER_LOOKUP`].
async fn prior_rows(conn: &mut SqliteConnection, keys: &[&str]) -> Result<Vec<LedgerEntry>, AttemptError> {
    let mut entries = Vec::new();
    for chunk in keys.chunks(KEYS_PER_LOOKUP) {
        let placeholders = vec!["?"; chunk.len()].join(", ");
        let mut query = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key IN ({placeholders})"
        )));
        for key in chunk {
            query = query.bind(*key);
        }
        let rows = query.fetch_all(&mut *conn).await.map_err(classify)?;
        for row in &rows {
            entries.push(ledger_entry(row)?);
        }
    }
    Ok(entries)
}

/// Inserts the batch's ledger rows and returns their ids in `rows` order.
async fn insert_batch_rows(
    conn: &mut SqliteConnection,
    sku: &SkuId,
    rows: &[NewLedgerRow],
) -> Result<Vec<i64>, AttemptError> {
    let mut ids = Vec::with_capacity(rows.len());
    for chunk in rows.chunks(LEDGER_ROWS_PER_INSERT) {
        let values = vec!["(?, ?, ?, 'deduct', ?)"; chunk.len()].join(", ");
        let mut query = sqlx::query_as::<_, (i64, i64)>(sqlx::AssertSqlSafe(format!(
            "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             VALUES {values} RETURNING id, stock_after"
        )));
        for row in chunk {
            query = query
                .bind(sku.as_str())
                .bind(-row.quantity)
                .bind(row.stock_after)
                .bind(row.idempotency_key.as_deref());
        }
        let returned = query.fetch_all(&mut *conn).await.map_err(classify)?;
        // SQLite does not promise RETURNING order. stock_after strictly decreases within a
        // batch (every quantity is ≥ 1), so it identifies each row.
        let by_stock_after: HashMap<i64, i64> = returned.into_iter().map(|(id, after)| (after, id)).collect();
        for row in chunk {
            ids.push(
                *by_stock_after
                    .get(&row.stock_after)
                    .ok_or(DeductError::Internal {
                        context: "batch insert returned fewer rows than planned",
                        source: None,
                    })?,
            );
        }
    }
    Ok(ids)
}

impl BatchExecutor for SqliteShared {
    async fn execute_batch(
        &self,
        sku: &SkuId,
        items: &[BatchItem],
    ) -> Result<Vec<Result<Receipt, DeductError>>, AttemptError> {
        let mut conn = self.acquire().await?;
        let lock_started = Instant::now();
        let mut tx = conn.begin_with(BEGIN_WRITE).await.map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let outcome = apply_batch(&mut tx, sku, items).await;
        let (plan, ledger_ids) = settle(tx, outcome).await?;
        Ok(plan.into_results(sku, items, &ledger_ids, lock_wait_us))
    }
}

impl SqliteStore {
    async fn restock_attempt(&self, sku: &SkuId, quantity: Quantity) -> Result<RestockReceipt, AttemptError> {
        let mut conn = self.shared().acquire().await?;
        let mut tx = conn.begin_with(BEGIN_WRITE).await.map_err(classify)?;
        let outcome = restock_write(&mut tx, sku, quantity).await;
        settle(tx, outcome).await
    }
}

/// The optimistic write, inside a transaction that holds the write lock: the
/// compare-and-set on the version read earlier, then the ledger row.
async fn compare_and_set(
    conn: &mut SqliteConnection,
    request: &DeductRequest,
    stock_after: i64,
    version: i64,
    lock_wait_us: u64,
) -> Result<Receipt, AttemptError> {
    let swapped =
        sqlx::query("UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1 AND version = ?3")
            .bind(request.sku.as_str())
            .bind(stock_after)
            .bind(version)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
    if swapped.rows_affected() == 0 {
        return Err(AttemptError::Retry(RetryCause::VersionMismatch));
    }
    insert_deduct_row(conn, request, stock_after, lock_wait_us).await
}

/// The guarded write, inside a transaction that holds the write lock.
async fn guarded_write(
    conn: &mut SqliteConnection,
    request: &DeductRequest,
    lock_wait_us: u64,
) -> Result<Receipt, AttemptError> {
    if let Some(receipt) = replay_if_used(conn, request).await? {
        return Ok(receipt);
    }
    // The database decides: the row changes only if it still holds enough.
    let stock_after: Option<i64> = sqlx::query_scalar(
        "UPDATE inventory SET stock = stock - ?2, version = version + 1 \
         WHERE sku = ?1 AND stock >= ?2 RETURNING stock",
    )
    .bind(request.sku.as_str())
    .bind(request.quantity.get())
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let Some(stock_after) = stock_after else {
        // Still inside the write transaction, so this read explains exactly the miss.
        let stock = read_stock(conn, &request.sku).await?;
        check_fits(request, stock)?;
        return Err(DeductError::Internal {
            context: "guarded update matched no row although the stock suffices",
            source: None,
        }
        .into());
    };
    insert_deduct_row(conn, request, stock_after, lock_wait_us).await
}

/// Plans and writes one coalesced batch inside a transaction that holds the write lock.
/// Returns the plan and the ids of its new ledger rows, in `plan.new_rows` order.
async fn apply_batch(
    conn: &mut SqliteConnection,
    sku: &SkuId,
    items: &[BatchItem],
) -> Result<(BatchPlan, Vec<i64>), AttemptError> {
    let stock = read_stock(conn, sku).await?;
    let keys: Vec<&str> = items
        .iter()
        .filter_map(|i| i.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .collect();
    let prior = prior_rows(conn, &keys).await?;
    let plan = BatchPlan::new(sku, stock, items, &prior);
    // An unknown SKU, or a batch of refusals and replays, plans no rows: nothing is written.
    let ledger_ids = if plan.new_rows.is_empty() {
        Vec::new()
    } else {
        sqlx::query("UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1")
            .bind(sku.as_str())
            .bind(plan.stock_after)
            .execute(&mut *conn)
            .await
            .map_err(classify)?;
        insert_batch_rows(conn, sku, &plan.new_rows).await?
    };
    Ok((plan, ledger_ids))
}

/// The restock write, inside a transaction that holds the write lock.
async fn restock_write(
    conn: &mut SqliteConnection,
    sku: &SkuId,
    quantity: Quantity,
) -> Result<RestockReceipt, AttemptError> {
    let stock_after: Option<i64> = sqlx::query_scalar(
        "UPDATE inventory SET stock = stock + ?2, version = version + 1 \
         WHERE sku = ?1 AND stock <= ?3 - ?2 RETURNING stock",
    )
    .bind(sku.as_str())
    .bind(quantity.get())
    .bind(STOCK_MAX)
    .fetch_optional(&mut *conn)
    .await
    .map_err(classify)?;
    let Some(stock_after) = stock_after else {
        return match read_stock(conn, sku).await? {
            None => Err(DeductError::NotFound.into()),
            Some(stock) => Err(InvalidInput::StockOutOfRange {
                given: stock + quantity.get(),
                max: STOCK_MAX,
            }
            .into()),
        };
    };
    let ledger_id: i64 = sqlx::query_scalar(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
             VALUES (?1, ?2, ?3, 'restock') RETURNING id",
    )
    .bind(sku.as_str())
    .bind(quantity.get())
    .bind(stock_after)
    .fetch_one(&mut *conn)
    .await
    .map_err(classify)?;
    Ok(RestockReceipt {
        sku: sku.clone(),
        quantity,
        stock_after,
        ledger_id,
    })
}

impl InventoryStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Not `Sharded`: SQLite admits one writer at a time, so spreading a SKU over
            // bucket rows cannot let two deductions proceed at once.
            strategies: Strategy::ALL
                .into_iter()
                .filter(|s| *s != Strategy::Sharded)
                .collect(),
            // BEGIN IMMEDIATE locks the whole database, not a row.
            row_level_locking: false,
        }
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        stockguard_core::check_stock_level(initial_stock)?;
        let created = sqlx::query(
            "INSERT INTO inventory (sku, stock, initial_stock) VALUES (?1, ?2, ?2) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku.as_str())
        .bind(initial_stock)
        .execute(&self.shared().pool)
        .await
        .map_err(|e| error::fail(e, "creating a sku"))?;
        if created.rows_affected() == 0 {
            return Err(DeductError::AlreadyExists);
        }
        Ok(StockLevel {
            sku: sku.clone(),
            stock: initial_stock,
            initial_stock,
        })
    }

    async fn restock(&self, sku: &SkuId, quantity: Quantity) -> Result<RestockReceipt, DeductError> {
        let (receipt, _) = self
            .shared()
            .config
            .retry
            .run(|_| self.restock_attempt(sku, quantity))
            .await?;
        Ok(receipt)
    }

    async fn deduct(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        let shared = self.shared();
        let retry = &shared.config.retry;
        let attempt_result = match request.strategy {
            Strategy::Coalesced => return self.coalescer.submit(request).await,
            Strategy::Pessimistic => retry.run(|_| shared.pessimistic_attempt(&request)).await,
            Strategy::NoWait => retry.run(|_| shared.no_wait_attempt(&request)).await,
            Strategy::Optimistic => retry.run(|_| shared.optimistic_attempt(&request)).await,
            Strategy::Guarded => retry.run(|_| shared.guarded_attempt(&request)).await,
            other => {
                return Err(InvalidInput::UnsupportedStrategy {
                    strategy: other,
                    backend: "sqlite",
                }
                .into());
            }
        };
        let (mut receipt, attempts) = attempt_result?;
        receipt.attempts = attempts;
        Ok(receipt)
    }

    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        let row: Option<(i64, i64)> =
            sqlx::query_as("SELECT stock, initial_stock FROM inventory WHERE sku = ?1")
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
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE sku = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
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
        // One statement reads one WAL snapshot, so stock and ledger sums are consistent.
        let rows: Vec<StoredSnapshotRow> = sqlx::query_as(
            "SELECT i.sku, i.initial_stock, i.stock, COALESCE(l.delta_sum, 0), COALESCE(l.row_count, 0) \
             FROM inventory i \
             LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count FROM inventory_ledger GROUP BY sku) l \
               ON l.sku = i.sku \
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
            .map_err(|e| error::fail(e, "pinging SQLite"))
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
