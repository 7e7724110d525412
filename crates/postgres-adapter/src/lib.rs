//! PostgreSQL adapter for stockguard. It owns the SQL and maps PostgreSQL error codes onto
//! [`DeductError`]; the semantics live in `stockguard-core`.
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN; SELECT stock … FOR UPDATE; UPDATE … SET stock = <read − q>` + ledger insert (one CTE)`; COMMIT` |
//! | `NoWait` | as `Pessimistic` with `FOR UPDATE NOWAIT` (55P03 → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version`; then one CTE: `UPDATE … WHERE version = $v` + ledger insert; retried on a miss |
//! | `Guarded` | one CTE: `UPDATE … SET stock = stock − q WHERE stock >= q` + ledger insert |
//! | `Coalesced` | per batch: `BEGIN; SELECT … FOR UPDATE;` one CTE: `UPDATE` + `INSERT … SELECT FROM UNNEST(…)`; `COMMIT`. A batch of one runs the `Guarded` statement. |

mod error;

use std::str::FromStr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use stockguard_core::{
    AttemptError, BatchExecutor, BatchItem, BatchPlan, Capabilities, Coalescer, CoalescerConfig, DeductError,
    DeductRequest, IdempotencyKey, InvalidInput, InventoryStore, LedgerEntry, LedgerPage, LedgerReason,
    PoolStatus, Quantity, Receipt, RestockReceipt, RetryCause, RetryPolicy, STOCK_MAX, SkuId, SkuSnapshot,
    StockLevel, Strategy, model::replay, single_item_outcome,
};

pub use error::classify;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Every limit of the adapter, explicit.
#[derive(Debug, Clone)]
pub struct PgConfig {
    /// Connection URL.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a row lock before `LockTimeout` (session `lock_timeout`).
    pub lock_timeout: Duration,
    /// Upper bound on any statement (session `statement_timeout`).
    pub statement_timeout: Duration,
    /// Retries for version misses, deadlocks and serialization failures.
    pub retry: RetryPolicy,
    /// Group-commit limits for `Coalesced`.
    pub coalescer: CoalescerConfig,
}

impl PgConfig {
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
        }
    }
}

/// The shared state behind a [`PgStore`]; also the coalescer's batch executor.
#[derive(Debug)]
pub struct PgShared {
    pool: PgPool,
    config: PgConfig,
}

/// A stockguard store on PostgreSQL. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    coalescer: Coalescer<PgShared>,
}

const LEDGER_COLUMNS: &str = "id, sku, delta, stock_after, reason, idempotency_key, created_at";

fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl PgStore {
    /// Opens the pool (failing fast if the server is unreachable). Does not migrate.
    pub async fn connect(config: PgConfig) -> Result<Self, DeductError> {
        let options = PgConnectOptions::from_str(&config.url)
            .map_err(|e| DeductError::internal("parsing the PostgreSQL URL", e))?
            .options([
                ("lock_timeout", format!("{}ms", millis(config.lock_timeout))),
                (
                    "statement_timeout",
                    format!("{}ms", millis(config.statement_timeout)),
                ),
            ]);
        let pool = PgPoolOptions::new()
            .max_connections(config.max_connections)
            .acquire_timeout(config.acquire_timeout)
            .connect_with(options)
            .await
            .map_err(|e| error::fail(e, "connecting to PostgreSQL"))?;
        let coalescer_config = config.coalescer;
        Ok(Self {
            coalescer: Coalescer::new(PgShared { pool, config }, coalescer_config),
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
    pub fn pool(&self) -> &PgPool {
        &self.shared().pool
    }

    /// The group-commit queue (for metrics).
    pub fn coalescer(&self) -> &Coalescer<PgShared> {
        &self.coalescer
    }

    fn shared(&self) -> &PgShared {
        self.coalescer.executor()
    }
}

fn ledger_entry(row: &PgRow) -> Result<LedgerEntry, DeductError> {
    let sku: String = row.try_get("sku").map_err(|e| error::fail(e, "reading ledger"))?;
    let reason: String = row
        .try_get("reason")
        .map_err(|e| error::fail(e, "reading ledger"))?;
    Ok(LedgerEntry {
        id: row.try_get("id").map_err(|e| error::fail(e, "reading ledger"))?,
        sku: SkuId::parse(sku).map_err(|e| DeductError::internal("stored sku id is invalid", e))?,
        delta: row
            .try_get("delta")
            .map_err(|e| error::fail(e, "reading ledger"))?,
        stock_after: row
            .try_get("stock_after")
            .map_err(|e| error::fail(e, "reading ledger"))?,
        reason: LedgerReason::from_db(&reason).ok_or(DeductError::Internal {
            context: "stored ledger reason is unknown",
            source: None,
        })?,
        idempotency_key: row
            .try_get("idempotency_key")
            .map_err(|e| error::fail(e, "reading ledger"))?,
        created_at: row
            .try_get::<DateTime<Utc>, _>("created_at")
            .map_err(|e| error::fail(e, "reading ledger"))?,
    })
}

impl PgShared {
    async fn find_key(&self, key: &IdempotencyKey) -> Result<Option<LedgerEntry>, AttemptError> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key = $1"
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
        let stock: Option<i64> = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = $1")
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

    fn receipt(request: &DeductRequest, row: &PgRow, lock_wait_us: u64) -> Result<Receipt, AttemptError> {
        Ok(Receipt {
            sku: request.sku.clone(),
            quantity: request.quantity,
            ledger_id: row.try_get("id").map_err(classify)?,
            remaining: row.try_get("stock_after").map_err(classify)?,
            attempts: 1,
            replayed: false,
            lock_wait_us,
        })
    }

    async fn locked_attempt(&self, request: &DeductRequest, no_wait: bool) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let lock_started = Instant::now();
        let select = if no_wait {
            "SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE NOWAIT"
        } else {
            "SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE"
        };
        let stock: Option<i64> = sqlx::query_scalar(select)
            .bind(request.sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
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
        // The application computes the new value from what it read under the lock. Without
        // the lock this is the classic lost update; the conformance suite catches it.
        let row = sqlx::query(
            "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING stock) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, $3, u.stock, 'deduct', $4 FROM u RETURNING id, stock_after",
        )
        .bind(request.sku.as_str())
        .bind(stock - requested)
        .bind(-requested)
        .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let receipt = Self::receipt(request, &row, lock_wait_us)?;
        tx.commit().await.map_err(classify)?;
        Ok(receipt)
    }

    async fn optimistic_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        // Re-read on every attempt: comparing against a stale version can never succeed.
        let current: Option<(i64, i64)> =
            sqlx::query_as("SELECT stock, version FROM inventory WHERE sku = $1")
                .bind(request.sku.as_str())
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
        let requested = request.quantity.get();
        let Some((stock, version)) = current else {
            return Err(DeductError::NotFound.into());
        };
        if stock < requested {
            return Err(DeductError::InsufficientStock {
                requested,
                available: stock,
            }
            .into());
        }
        let write_started = Instant::now();
        let row = sqlx::query(
            "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 \
                        WHERE sku = $1 AND version = $5 RETURNING stock) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, $3, u.stock, 'deduct', $4 FROM u RETURNING id, stock_after",
        )
        .bind(request.sku.as_str())
        .bind(stock - requested)
        .bind(-requested)
        .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .bind(version)
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        match row {
            Some(row) => Self::receipt(request, &row, micros(write_started.elapsed())),
            None => Err(AttemptError::Retry(RetryCause::VersionMismatch)),
        }
    }

    async fn guarded_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let write_started = Instant::now();
        let row = sqlx::query(
            "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                        WHERE sku = $1 AND stock >= $2 RETURNING stock) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, -$2, u.stock, 'deduct', $3 FROM u RETURNING id, stock_after",
        )
        .bind(request.sku.as_str())
        .bind(request.quantity.get())
        .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .fetch_optional(&self.pool)
        .await
        .map_err(classify)?;
        match row {
            Some(row) => Self::receipt(request, &row, micros(write_started.elapsed())),
            None => self.explain_miss(request).await,
        }
    }
}

impl BatchExecutor for PgShared {
    async fn execute_batch(
        &self,
        sku: &SkuId,
        items: &[BatchItem],
    ) -> Result<Vec<Result<Receipt, DeductError>>, AttemptError> {
        // A batch of one is an uncontended SKU: the single guarded statement gives the same
        // result in one round trip instead of four, which keeps coalescing cheap at low conflict.
        if let [item] = items {
            let request = item.to_request(sku, Strategy::Guarded);
            return single_item_outcome(self.guarded_attempt(&request).await);
        }
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let lock_started = Instant::now();
        let stock: Option<i64> = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE")
            .bind(sku.as_str())
            .fetch_optional(&mut *tx)
            .await
            .map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let keys: Vec<&str> = items
            .iter()
            .filter_map(|i| i.idempotency_key.as_ref().map(IdempotencyKey::as_str))
            .collect();
        let prior = if keys.is_empty() {
            Vec::new()
        } else {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE idempotency_key = ANY($1)"
            )))
            .bind(&keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            rows.iter().map(ledger_entry).collect::<Result<Vec<_>, _>>()?
        };
        let plan = BatchPlan::new(sku, stock, items, &prior);
        let mut ledger_ids = Vec::with_capacity(plan.new_rows.len());
        // An unknown SKU plans no rows, so nothing is written.
        if !plan.new_rows.is_empty() {
            let quantities: Vec<i64> = plan.new_rows.iter().map(|r| r.quantity).collect();
            let stock_afters: Vec<i64> = plan.new_rows.iter().map(|r| r.stock_after).collect();
            let row_keys: Vec<Option<String>> =
                plan.new_rows.iter().map(|r| r.idempotency_key.clone()).collect();
            let rows: Vec<(i64, i64)> = sqlx::query_as(
                "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING sku) \
                 INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                 SELECT u.sku, -t.q, t.after, 'deduct', t.k \
                 FROM u, UNNEST($3::bigint[], $4::bigint[], $5::varchar[]) WITH ORDINALITY AS t(q, after, k, ord) \
                 ORDER BY t.ord RETURNING id, stock_after",
            )
            .bind(sku.as_str())
            .bind(plan.stock_after)
            .bind(&quantities)
            .bind(&stock_afters)
            .bind(&row_keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            // stock_after strictly decreases within a batch, so it identifies each row even
            // though RETURNING order is not guaranteed.
            let by_after: std::collections::HashMap<i64, i64> =
                rows.into_iter().map(|(id, after)| (after, id)).collect();
            for row in &plan.new_rows {
                ledger_ids.push(*by_after.get(&row.stock_after).ok_or(DeductError::Internal {
                    context: "batch insert returned fewer rows than planned",
                    source: None,
                })?);
            }
        }
        tx.commit().await.map_err(classify)?;
        Ok(plan.into_results(sku, items, &ledger_ids, lock_wait_us))
    }
}

impl InventoryStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            strategies: Strategy::ALL.to_vec(),
            row_level_locking: true,
        }
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        stockguard_core::check_stock_level(initial_stock)?;
        let created = sqlx::query(
            "INSERT INTO inventory (sku, stock, initial_stock) VALUES ($1, $2, $2) ON CONFLICT (sku) DO NOTHING",
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
        let shared = self.shared();
        let (row, _) = shared
            .config
            .retry
            .run(|_| async {
                let row: Option<(i64, i64)> = sqlx::query_as(
                    "WITH u AS (UPDATE inventory SET stock = stock + $2, version = version + 1 \
                                WHERE sku = $1 AND stock <= $3 - $2 RETURNING stock) \
                     INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
                     SELECT $1, $2, u.stock, 'restock' FROM u RETURNING id, stock_after",
                )
                .bind(sku.as_str())
                .bind(quantity.get())
                .bind(STOCK_MAX)
                .fetch_optional(&shared.pool)
                .await
                .map_err(classify)?;
                Ok(row)
            })
            .await?;
        match row {
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
        let attempt_result = match request.strategy {
            Strategy::Coalesced => return self.coalescer.submit(request).await,
            Strategy::Pessimistic => {
                shared
                    .config
                    .retry
                    .run(|_| shared.locked_attempt(&request, false))
                    .await
            }
            Strategy::NoWait => {
                shared
                    .config
                    .retry
                    .run(|_| shared.locked_attempt(&request, true))
                    .await
            }
            Strategy::Optimistic => {
                shared
                    .config
                    .retry
                    .run(|_| shared.optimistic_attempt(&request))
                    .await
            }
            Strategy::Guarded => {
                shared
                    .config
                    .retry
                    .run(|_| shared.guarded_attempt(&request))
                    .await
            }
            other => {
                return Err(InvalidInput::UnsupportedStrategy {
                    strategy: other,
                    backend: "postgres",
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
            sqlx::query_as("SELECT stock, initial_stock FROM inventory WHERE sku = $1")
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
            "SELECT {LEDGER_COLUMNS} FROM inventory_ledger WHERE sku = $1 AND id > $2 ORDER BY id LIMIT $3"
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
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT i.sku, i.initial_stock, i.stock, COALESCE(l.delta_sum, 0)::bigint, COALESCE(l.row_count, 0)::bigint \
             FROM inventory i \
             LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count FROM inventory_ledger GROUP BY sku) l \
               ON l.sku = i.sku \
             ORDER BY i.sku",
        )
        .fetch_all(&self.shared().pool)
        .await
        .map_err(|e| error::fail(e, "auditing"))?;
        rows.into_iter()
            .map(|(sku, initial_stock, stock, ledger_delta_sum, ledger_rows)| {
                Ok(SkuSnapshot {
                    sku: SkuId::parse(sku)
                        .map_err(|e| DeductError::internal("stored sku id is invalid", e))?,
                    initial_stock,
                    stock,
                    ledger_delta_sum,
                    ledger_rows,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<(), DeductError> {
        sqlx::query("SELECT 1")
            .execute(&self.shared().pool)
            .await
            .map(|_| ())
            .map_err(|e| error::fail(e, "pinging PostgreSQL"))
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
