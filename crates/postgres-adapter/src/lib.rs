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
//! | `Sharded` | one CTE: take from a free bucket with room (`FOR UPDATE SKIP LOCKED`), or from the free row of an unsharded SKU, and insert the ledger row; else wait for one random bucket with room; else `BEGIN;` lock the SKU row (`FOR NO KEY UPDATE`) and every bucket, deduct from the total, re-spread it; `COMMIT` |
//!
//! A SKU's stock is its row's `stock` plus its buckets' (`inventory_bucket`), see
//! [`stockguard_core::sharding`]. The strategies other than `Sharded` take from the row and,
//! before refusing, empty the buckets into it. The consistent `Sharded` path locks the SKU row
//! `FOR NO KEY UPDATE`, not `FOR UPDATE`: the ledger insert's foreign-key check takes
//! `FOR KEY SHARE` on that row while holding a bucket, and the two must not conflict or a
//! bucket deduction and a re-spread would deadlock.

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
    StockLevel, StoredSnapshotRow, Strategy,
    model::replay,
    sharding::{self, Gathered},
    single_item_outcome,
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
    /// Buckets a SKU's stock is spread over by `Sharded` (1..=`SHARD_BUCKETS_MAX`).
    pub shard_buckets: u32,
    /// `Sharded` spreads a SKU on its first deduction instead of the first time a deduction
    /// finds the SKU's row busy. For SKUs known to be hot before the sale starts.
    pub spread_eagerly: bool,
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
            shard_buckets: sharding::DEFAULT_SHARD_BUCKETS,
            spread_eagerly: false,
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

/// Units of SKU `$1` held in `Sharded` buckets, as a bigint (`SUM(bigint)` is numeric).
/// Added to the row's stock wherever the SKU's total is reported.
macro_rules! bucket_stock_of_param1 {
    () => {
        "COALESCE((SELECT SUM(stock) FROM inventory_bucket WHERE sku = $1), 0)::bigint"
    };
}

/// The `stock_after` a row-based write (CTE `u` returning the row's new `stock` and its
/// `sharded` flag) records for SKU `$1` whose stock changed by `$delta`: exact (`u.stock`) for
/// a SKU never spread, without touching the buckets (the flag keeps the hot path at one row;
/// the subqueries run only for a sharded SKU), and while a sharded SKU holds no bucket stock;
/// otherwise the total in this statement's snapshot plus `$delta`, the same estimate
/// `Sharded` records. Not `u.stock + <bucket stock>`: `u.stock` comes from the row's latest
/// version, read after waiting for its lock, while the bucket sum comes from the snapshot
/// taken before the wait, so a gather committed in between would be counted twice.
macro_rules! total_after {
    ($delta:literal) => {
        concat!(
            "CASE WHEN NOT u.sharded THEN u.stock ELSE \
             (SELECT CASE WHEN t.bucket_stock = 0 THEN u.stock \
                          ELSE GREATEST(t.row_stock + t.bucket_stock + ",
            $delta,
            ", 0) END \
              FROM (SELECT stock AS row_stock, ",
            bucket_stock_of_param1!(),
            " AS bucket_stock FROM inventory WHERE sku = $1) t) END"
        )
    };
}

/// `Sharded` first attempt, one statement that always returns one row `(id, stock_after,
/// sharded)`; `id` is NULL when nothing was taken. For SKU `$1`, `$2` units, key `$3`:
/// - a sharded SKU (it has bucket rows): a random bucket with room that no one holds
///   (`FOR UPDATE SKIP LOCKED`), decremented; `stock_after` is the statement snapshot's total
///   less this deduction;
/// - an unsharded SKU: its row, if no one holds it (`FOR NO KEY UPDATE SKIP LOCKED`) and it has
///   room (and `$4`, "take unsharded rows", is true), decremented like `Guarded`; `stock_after`
///   is exact. A busy row is the signal to spread the SKU: the caller takes the consistent path.
///
/// The two branches exclude each other: both test "has bucket rows" in the same snapshot, and
/// a spread committed after the snapshot changed the row, which fails the row's recheck.
const SHARDED_FIRST_ATTEMPT_SQL: &str = concat!(
    "WITH b AS (SELECT bucket FROM inventory_bucket WHERE sku = $1 AND stock >= $2 \
                ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED), \
          ub AS (UPDATE inventory_bucket ib SET stock = ib.stock - $2 FROM b \
                 WHERE ib.sku = $1 AND ib.bucket = b.bucket AND ib.stock >= $2 RETURNING ib.stock), \
          r AS (SELECT sku FROM inventory WHERE sku = $1 AND stock >= $2 AND $4 \
                AND NOT EXISTS (SELECT 1 FROM inventory_bucket WHERE sku = $1) \
                FOR NO KEY UPDATE SKIP LOCKED), \
          ur AS (UPDATE inventory i SET stock = i.stock - $2, version = i.version + 1 FROM r \
                 WHERE i.sku = r.sku AND i.stock >= $2 RETURNING i.stock), \
          ins AS (INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                  SELECT $1, -$2, t.after, 'deduct', $3 FROM ( \
                      SELECT GREATEST((SELECT stock FROM inventory WHERE sku = $1) + ",
    bucket_stock_of_param1!(),
    " - $2, 0) AS after FROM ub \
                      UNION ALL SELECT ur.stock FROM ur) t \
                  RETURNING id, stock_after) \
     SELECT ins.id, ins.stock_after, EXISTS (SELECT 1 FROM inventory_bucket WHERE sku = $1) AS sharded \
     FROM (SELECT 1) AS one LEFT JOIN ins ON true"
);

/// `Sharded` second attempt on a sharded SKU whose free buckets had no room: wait for one
/// random bucket with room. The `UPDATE` waits for that one row and rechecks its stock.
/// Deliberately no `FOR UPDATE` in the pick: a locking pick whose row fails the recheck keeps
/// that lock and moves on to wait for the next row, and holding one bucket while waiting for
/// another deadlocks against the consistent path (seen in testing).
const SHARDED_WAIT_FOR_BUCKET_SQL: &str = concat!(
    "WITH b AS (SELECT bucket FROM inventory_bucket WHERE sku = $1 AND stock >= $2 \
                ORDER BY random() LIMIT 1), \
          u AS (UPDATE inventory_bucket ib SET stock = ib.stock - $2 FROM b \
                WHERE ib.sku = $1 AND ib.bucket = b.bucket AND ib.stock >= $2 RETURNING ib.stock) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, -$2, GREATEST((SELECT stock FROM inventory WHERE sku = $1) + ",
    bucket_stock_of_param1!(),
    " - $2, 0), 'deduct', $3 FROM u RETURNING id, stock_after"
);

fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl PgStore {
    /// Opens the pool (failing fast if the server is unreachable). Does not migrate.
    pub async fn connect(config: PgConfig) -> Result<Self, DeductError> {
        sharding::check_bucket_count(config.shard_buckets)?;
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
        let row = sqlx::query(concat!(
            "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING stock, sharded) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, $3, ",
            total_after!("$3"),
            ", 'deduct', $4 FROM u RETURNING id, stock_after"
        ))
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
        let row = sqlx::query(concat!(
            "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 \
                        WHERE sku = $1 AND version = $5 RETURNING stock, sharded) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, $3, ",
            total_after!("$3"),
            ", 'deduct', $4 FROM u RETURNING id, stock_after"
        ))
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
        let row = sqlx::query(concat!(
            "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                        WHERE sku = $1 AND stock >= $2 RETURNING stock, sharded) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             SELECT $1, -$2, ",
            total_after!("-$2"),
            ", 'deduct', $3 FROM u RETURNING id, stock_after"
        ))
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

    /// `Sharded`: take from a free bucket with room, or from the row while the SKU is
    /// unsharded and its row is free; else wait for one bucket with room; else the consistent
    /// path, which spreads the SKU over buckets (so a SKU is spread the first time two
    /// deductions meet on its row, or on its first deduction with `spread_eagerly`).
    async fn sharded_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        if let Some(receipt) = self.replay_if_used(request).await? {
            return Ok(receipt);
        }
        let started = Instant::now();
        let (ledger_id, stock_after, sharded): (Option<i64>, Option<i64>, bool) =
            sqlx::query_as(SHARDED_FIRST_ATTEMPT_SQL)
                .bind(request.sku.as_str())
                .bind(request.quantity.get())
                .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
                .bind(!self.config.spread_eagerly)
                .fetch_one(&self.pool)
                .await
                .map_err(classify)?;
        if let (Some(ledger_id), Some(remaining)) = (ledger_id, stock_after) {
            return Ok(Receipt {
                sku: request.sku.clone(),
                quantity: request.quantity,
                ledger_id,
                remaining,
                attempts: 1,
                replayed: false,
                lock_wait_us: micros(started.elapsed()),
            });
        }
        if sharded {
            let started = Instant::now();
            let row = sqlx::query(SHARDED_WAIT_FOR_BUCKET_SQL)
                .bind(request.sku.as_str())
                .bind(request.quantity.get())
                .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
                .fetch_optional(&self.pool)
                .await
                .map_err(classify)?;
            if let Some(row) = row {
                return Self::receipt(request, &row, micros(started.elapsed()));
            }
        }
        self.spread_attempt(request).await
    }

    /// Locks SKU `sku`'s row and then every bucket, in bucket order (the one lock order every
    /// multi-row path uses). `None` when the SKU does not exist.
    async fn lock_sku_and_buckets(
        tx: &mut sqlx::PgConnection,
        sku: &SkuId,
    ) -> Result<Option<(i64, Vec<(i32, i64)>)>, AttemptError> {
        let row: Option<i64> =
            sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = $1 FOR NO KEY UPDATE")
                .bind(sku.as_str())
                .fetch_optional(&mut *tx)
                .await
                .map_err(classify)?;
        let Some(row) = row else { return Ok(None) };
        let buckets: Vec<(i32, i64)> = sqlx::query_as(
            "SELECT bucket, stock FROM inventory_bucket WHERE sku = $1 ORDER BY bucket FOR UPDATE",
        )
        .bind(sku.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(classify)?;
        Ok(Some((row, buckets)))
    }

    /// The consistent `Sharded` path: with the SKU and all its buckets locked, the total is
    /// exact, so a refusal here is exact too. What is left is spread evenly over the buckets.
    async fn spread_attempt(&self, request: &DeductRequest) -> Result<Receipt, AttemptError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        let lock_started = Instant::now();
        let Some((row_stock, buckets)) = Self::lock_sku_and_buckets(&mut tx, &request.sku).await? else {
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
        let (ids, stocks): (Vec<i32>, Vec<i64>) = sharding::respread(
            left,
            self.config.shard_buckets,
            buckets.iter().map(|(bucket, _)| i64::from(*bucket)),
        )
        .into_iter()
        .map(|(bucket, stock)| (i32::try_from(bucket).unwrap_or(i32::MAX), stock))
        .unzip();
        let row = sqlx::query(
            "WITH spread AS (INSERT INTO inventory_bucket (sku, bucket, stock) \
                             SELECT $1, t.b, t.s FROM UNNEST($2::int[], $3::bigint[]) AS t(b, s) \
                             ON CONFLICT (sku, bucket) DO UPDATE SET stock = EXCLUDED.stock), \
                  emptied AS (UPDATE inventory SET stock = 0, sharded = TRUE, version = version + 1 WHERE sku = $1) \
             INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
             VALUES ($1, -$4, $5, 'deduct', $6) RETURNING id, stock_after",
        )
        .bind(request.sku.as_str())
        .bind(&ids)
        .bind(&stocks)
        .bind(requested)
        .bind(left)
        .bind(request.idempotency_key.as_ref().map(IdempotencyKey::as_str))
        .fetch_one(&mut *tx)
        .await
        .map_err(classify)?;
        let receipt = Self::receipt(request, &row, lock_wait_us)?;
        tx.commit().await.map_err(classify)?;
        Ok(receipt)
    }

    /// Before a row-based strategy refuses `requested` units: is the SKU's total short, or
    /// could buckets cover it? If they could, they are emptied into the row (no ledger row:
    /// the total is unchanged) and the caller runs its request again.
    async fn gather(&self, sku: &SkuId, requested: i64) -> Result<Gathered, DeductError> {
        // One statement, one snapshot: a total below `requested` here was the total at an
        // instant, so refusing on it is exact. Most SKUs have no buckets and stop here.
        let totals: Option<(i64, i64)> = sqlx::query_as(concat!(
            "SELECT stock, ",
            bucket_stock_of_param1!(),
            " FROM inventory WHERE sku = $1"
        ))
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
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let Some((row_stock, buckets)) = Self::lock_sku_and_buckets(&mut tx, sku).await? else {
                    return Err(DeductError::NotFound.into());
                };
                let bucket_stock: i64 = buckets.iter().map(|(_, stock)| stock).sum();
                if row_stock + bucket_stock < requested {
                    return Ok(Gathered::Short {
                        total: row_stock + bucket_stock,
                    });
                }
                sqlx::query(
                    "WITH emptied AS (UPDATE inventory_bucket SET stock = 0 WHERE sku = $1 AND stock > 0) \
                     UPDATE inventory SET stock = stock + $2, version = version + 1 WHERE sku = $1",
                )
                .bind(sku.as_str())
                .bind(bucket_stock)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(Gathered::Retry)
            })
            .await?;
        Ok(gathered)
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
        // The locked row's latest stock, plus the snapshot's row stock and bucket stock for
        // the estimate `total_after!` describes.
        let locked: Option<(i64, i64, i64)> = sqlx::query_as(concat!(
            "SELECT stock, (SELECT stock FROM inventory WHERE sku = $1), ",
            bucket_stock_of_param1!(),
            " FROM inventory WHERE sku = $1 FOR UPDATE"
        ))
        .bind(sku.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(classify)?;
        let lock_wait_us = micros(lock_started.elapsed());
        let stock = locked.map(|(row_stock, _, _)| row_stock);
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
        let mut plan = BatchPlan::new(sku, stock, items, &prior);
        if let Some((row_stock, snapshot_row_stock, bucket_stock)) = locked
            && bucket_stock > 0
        {
            plan.report_total_stock(snapshot_row_stock + bucket_stock - row_stock);
        }
        let mut ledger_ids = Vec::new();
        // An unknown SKU plans no rows, so nothing is written.
        if !plan.new_rows.is_empty() {
            let quantities: Vec<i64> = plan.new_rows.iter().map(|r| r.quantity).collect();
            let stock_afters: Vec<i64> = plan.new_rows.iter().map(|r| r.stock_after).collect();
            let row_keys: Vec<Option<String>> =
                plan.new_rows.iter().map(|r| r.idempotency_key.clone()).collect();
            let mut ids: Vec<i64> = sqlx::query_scalar(
                "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING sku) \
                 INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                 SELECT u.sku, -t.q, t.after, 'deduct', t.k \
                 FROM u, UNNEST($3::bigint[], $4::bigint[], $5::varchar[]) WITH ORDINALITY AS t(q, after, k, ord) \
                 ORDER BY t.ord RETURNING id",
            )
            .bind(sku.as_str())
            .bind(plan.stock_after)
            .bind(&quantities)
            .bind(&stock_afters)
            .bind(&row_keys)
            .fetch_all(&mut *tx)
            .await
            .map_err(classify)?;
            // Identity values are drawn as the ordered SELECT feeds the insert, so ascending
            // ids follow the plan's order even though RETURNING's order is not guaranteed.
            ids.sort_unstable();
            if ids.len() != plan.new_rows.len() {
                return Err(DeductError::Internal {
                    context: "batch insert returned a different number of rows than planned",
                    source: None,
                }
                .into());
            }
            ledger_ids = ids;
        }
        tx.commit().await.map_err(classify)?;
        Ok(plan.into_results(sku, items, &ledger_ids, lock_wait_us))
    }
}

impl PgStore {
    /// The strategies that take from the SKU row (every one but `Sharded`), one run.
    async fn deduct_from_row(&self, request: &DeductRequest) -> Result<Receipt, DeductError> {
        let shared = self.shared();
        let attempt_result = match request.strategy {
            Strategy::Coalesced => return self.coalescer.submit(request.clone()).await,
            Strategy::Pessimistic => {
                shared
                    .config
                    .retry
                    .run(|_| shared.locked_attempt(request, false))
                    .await
            }
            Strategy::NoWait => {
                shared
                    .config
                    .retry
                    .run(|_| shared.locked_attempt(request, true))
                    .await
            }
            Strategy::Optimistic => {
                shared
                    .config
                    .retry
                    .run(|_| shared.optimistic_attempt(request))
                    .await
            }
            Strategy::Guarded => shared.config.retry.run(|_| shared.guarded_attempt(request)).await,
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
                // Restocks go to the SKU row; the total (row + buckets) stays within STOCK_MAX.
                let row: Option<(i64, i64)> = sqlx::query_as(concat!(
                    "WITH u AS (UPDATE inventory SET stock = stock + $2, version = version + 1 \
                                WHERE sku = $1 AND stock + ",
                    bucket_stock_of_param1!(),
                    " <= $3 - $2 RETURNING stock, sharded) \
                     INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
                     SELECT $1, $2, ",
                    total_after!("$2"),
                    ", 'restock' FROM u RETURNING id, stock_after"
                ))
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
        let row: Option<(i64, i64)> = sqlx::query_as(concat!(
            "SELECT stock + ",
            bucket_stock_of_param1!(),
            ", initial_stock FROM inventory WHERE sku = $1"
        ))
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
        let rows: Vec<StoredSnapshotRow> = sqlx::query_as(
            "SELECT i.sku, i.initial_stock, (i.stock + COALESCE(b.bucket_stock, 0))::bigint, \
                    COALESCE(l.delta_sum, 0)::bigint, COALESCE(l.row_count, 0)::bigint \
             FROM inventory i \
             LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count FROM inventory_ledger GROUP BY sku) l \
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
