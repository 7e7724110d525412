//! Databases: where the servers are, a fresh uniquely named database per run (dropped
//! afterwards), bulk setup, the in-database audit queries, environment info, and the raw
//! SQL paths (baselines and the negative control) that bypass the library.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};
use sqlx::{Connection, Executor, QueryBuilder};
use stockguard_testkit::{DEFAULT_MYSQL_URL, DEFAULT_PG_URL, MYSQL_URL_ENV, PG_URL_ENV, TestSqliteFile};

use crate::tally::Outcome;

/// A database the harness can run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// PostgreSQL (the `stockguard-postgres` adapter).
    Postgres,
    /// MariaDB or MySQL (the `stockguard-mysql` adapter).
    Mariadb,
    /// Embedded SQLite (the `stockguard-sqlite` adapter).
    Sqlite,
}

impl Backend {
    /// Every backend, in report order.
    pub const ALL: [Backend; 3] = [Backend::Postgres, Backend::Mariadb, Backend::Sqlite];

    /// The stable name used in flags, files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Mariadb => "mariadb",
            Backend::Sqlite => "sqlite",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "postgres" | "pg" | "postgresql" => Ok(Backend::Postgres),
            "mariadb" | "mysql" => Ok(Backend::Mariadb),
            "sqlite" => Ok(Backend::Sqlite),
            _ => bail!("unknown database {raw:?}: use postgres, mariadb or sqlite"),
        }
    }
}

/// The admin URL of a server: the environment variable the testkit also reads, or the
/// local default.
pub fn admin_url(backend: Backend) -> Option<String> {
    match backend {
        Backend::Postgres => Some(std::env::var(PG_URL_ENV).unwrap_or_else(|_| DEFAULT_PG_URL.to_owned())),
        Backend::Mariadb => {
            Some(std::env::var(MYSQL_URL_ENV).unwrap_or_else(|_| DEFAULT_MYSQL_URL.to_owned()))
        }
        Backend::Sqlite => None,
    }
}

/// False for a library strategy the backend's adapter does not implement (SQLite has no
/// `Sharded`: one writer at a time leaves nothing to spread). Such cases are not run.
pub fn supports(backend: Backend, variant: crate::runner::Variant) -> bool {
    !(backend == Backend::Sqlite
        && variant == crate::runner::Variant::Library(stockguard_core::Strategy::Sharded))
}

/// Checks that a server answers within 5 s.
pub async fn reachable(backend: Backend) -> Result<(), String> {
    let Some(url) = admin_url(backend) else {
        return Ok(());
    };
    let attempt = async {
        match backend {
            Backend::Postgres => sqlx::PgConnection::connect(&url).await?.close().await,
            Backend::Mariadb => sqlx::MySqlConnection::connect(&url).await?.close().await,
            Backend::Sqlite => Ok(()),
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("{url}: {error}")),
        Err(_) => Err(format!("{url}: no answer within 5 s")),
    }
}

/// A freshly created, uniquely named database for one run. [`FreshDatabase::drop_now`]
/// drops it; if that is never reached (an early error), `Drop` drops it from a helper
/// thread, so a bench run never leaves databases behind.
pub struct FreshDatabase {
    backend: Backend,
    admin_url: Option<String>,
    name: String,
    url: String,
    sqlite_file: Option<TestSqliteFile>,
    dropped: bool,
}

impl fmt::Debug for FreshDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FreshDatabase")
            .field("backend", &self.backend)
            .field("name", &self.name)
            .finish()
    }
}

/// Prefix of every database the harness creates, so a leftover is recognisable.
pub const DATABASE_PREFIX: &str = "sg_bench_";

impl FreshDatabase {
    /// Creates a uniquely named database (or a SQLite file in a fresh temp dir).
    pub async fn create(backend: Backend) -> anyhow::Result<Self> {
        let name = format!("{DATABASE_PREFIX}{}", uuid::Uuid::new_v4().simple());
        let admin_url = admin_url(backend);
        let (url, sqlite_file) = match (backend, &admin_url) {
            (Backend::Postgres, Some(admin)) => {
                let mut conn = sqlx::PgConnection::connect(admin).await?;
                conn.execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                    .await
                    .with_context(|| format!("creating database {name}"))?;
                conn.close().await?;
                (stockguard_testkit::with_database(admin, &name), None)
            }
            (Backend::Mariadb, Some(admin)) => {
                let mut conn = sqlx::MySqlConnection::connect(admin).await?;
                conn.execute(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )))
                .await
                .with_context(|| format!("creating database {name}"))?;
                conn.close().await?;
                (stockguard_testkit::with_database(admin, &name), None)
            }
            _ => {
                let file = TestSqliteFile::new();
                (file.path().display().to_string(), Some(file))
            }
        };
        Ok(Self {
            backend,
            admin_url,
            name,
            url,
            sqlite_file,
            dropped: false,
        })
    }

    /// The URL (or, for SQLite, the file path) of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database now (terminating leftover connections).
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        drop_database(self.backend, self.admin_url.clone(), self.name.clone()).await?;
        // The SQLite temp dir goes with `self`.
        self.sqlite_file.take();
        Ok(())
    }
}

async fn drop_database(backend: Backend, admin_url: Option<String>, name: String) -> anyhow::Result<()> {
    match (backend, admin_url) {
        (Backend::Postgres, Some(admin)) => {
            let mut conn = sqlx::PgConnection::connect(&admin).await?;
            conn.execute(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .await?;
            conn.close().await?;
        }
        (Backend::Mariadb, Some(admin)) => {
            let mut conn = sqlx::MySqlConnection::connect(&admin).await?;
            conn.execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                .await?;
            conn.close().await?;
        }
        _ => {}
    }
    Ok(())
}

impl Drop for FreshDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (backend, admin_url, name) = (self.backend, self.admin_url.clone(), self.name.clone());
        // Drop may run inside the runtime, where blocking on a future is not allowed; a plain
        // thread with its own runtime is.
        let outcome = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|runtime| runtime.block_on(drop_database(backend, admin_url, name)))
        })
        .join();
        if !matches!(outcome, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop bench database {} ({outcome:?}); drop it by hand",
                self.name
            );
        }
    }
}

/// A bare sqlx pool on the run's database: used for setup, the audit, the environment
/// queries, and the raw-SQL variants that bypass the library.
#[derive(Debug, Clone)]
pub enum RawPool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MariaDB/MySQL.
    Mariadb(MySqlPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

/// How long a raw SQLite connection waits for the write lock: the adapter's default busy
/// timeout, so the raw baseline waits like the library does (same WAL, `synchronous = FULL`).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// SQLite admits one writer at a time; more connections only add writers polling the busy
/// handler (the adapter's default pool is 8), so SQLite pools are capped here.
pub const SQLITE_POOL_MAX: u32 = 8;
/// How long a raw request waits for a pooled connection.
pub const RAW_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
/// Rows per bulk statement when creating SKUs (SQLite's and MariaDB's statement limits).
const BULK_CHUNK_ROWS: usize = 2_000;

impl RawPool {
    /// Opens a pool of `max_connections` on the database at `url`.
    pub async fn connect(backend: Backend, url: &str, max_connections: u32) -> anyhow::Result<Self> {
        Ok(match backend {
            Backend::Postgres => RawPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?,
            ),
            Backend::Mariadb => RawPool::Mariadb(
                MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                    .connect(url)
                    .await?,
            ),
            Backend::Sqlite => {
                let options = SqliteConnectOptions::new()
                    .filename(url)
                    .create_if_missing(true)
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                RawPool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                        .connect_with(options)
                        .await?,
                )
            }
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            RawPool::Postgres(pool) => pool.close().await,
            RawPool::Mariadb(pool) => pool.close().await,
            RawPool::Sqlite(pool) => pool.close().await,
        }
    }

    /// Creates or resets SKUs to the given stock (`initial_stock = stock`), and empties the
    /// ledger. Used before warm-up and again before the measured run, so the measured run
    /// starts from a clean, reconciled state.
    pub async fn reset_inventory(&self, skus: &[String], stocks: &[i64]) -> anyhow::Result<()> {
        assert_eq!(skus.len(), stocks.len());
        let all_equal = stocks.windows(2).all(|w| w[0] == w[1]);
        let existing = self.sku_count().await?;
        match self {
            // `Sharded` buckets left by the warm-up go too: the measured run starts unsharded.
            RawPool::Postgres(pool) => {
                pool.execute("DELETE FROM inventory_ledger").await?;
                pool.execute("DELETE FROM inventory_bucket").await?;
                pool.execute("UPDATE inventory SET sharded = FALSE WHERE sharded")
                    .await?;
            }
            RawPool::Mariadb(pool) => {
                pool.execute("DELETE FROM inventory_ledger").await?;
                pool.execute("DELETE FROM inventory_bucket").await?;
                pool.execute("UPDATE inventory SET sharded = FALSE WHERE sharded")
                    .await?;
            }
            RawPool::Sqlite(pool) => {
                pool.execute("DELETE FROM inventory_ledger").await?;
            }
        }
        if existing == skus.len() && all_equal {
            // One statement instead of one row per SKU: the common uniform case.
            let stock = stocks.first().copied().unwrap_or(0);
            match self {
                RawPool::Postgres(pool) => {
                    sqlx::query("UPDATE inventory SET stock = $1, initial_stock = $1, version = 0")
                        .bind(stock)
                        .execute(pool)
                        .await?;
                }
                RawPool::Mariadb(pool) => {
                    sqlx::query("UPDATE inventory SET stock = ?, initial_stock = ?, version = 0")
                        .bind(stock)
                        .bind(stock)
                        .execute(pool)
                        .await?;
                }
                RawPool::Sqlite(pool) => {
                    sqlx::query("UPDATE inventory SET stock = ?1, initial_stock = ?1, version = 0")
                        .bind(stock)
                        .execute(pool)
                        .await?;
                }
            }
            return Ok(());
        }
        for (sku_chunk, stock_chunk) in skus.chunks(BULK_CHUNK_ROWS).zip(stocks.chunks(BULK_CHUNK_ROWS)) {
            let rows = sku_chunk.iter().zip(stock_chunk);
            match self {
                RawPool::Postgres(pool) => {
                    let mut builder = QueryBuilder::new("INSERT INTO inventory (sku, stock, initial_stock) ");
                    builder.push_values(rows, |mut b, (sku, stock)| {
                        b.push_bind(sku).push_bind(*stock).push_bind(*stock);
                    });
                    builder.push(
                        " ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock, \
                         initial_stock = EXCLUDED.initial_stock, version = 0",
                    );
                    builder.build().execute(pool).await?;
                }
                RawPool::Mariadb(pool) => {
                    let mut builder = QueryBuilder::new("INSERT INTO inventory (sku, stock, initial_stock) ");
                    builder.push_values(rows, |mut b, (sku, stock)| {
                        b.push_bind(sku).push_bind(*stock).push_bind(*stock);
                    });
                    builder.push(
                        " ON DUPLICATE KEY UPDATE stock = VALUES(stock), \
                         initial_stock = VALUES(initial_stock), version = 0",
                    );
                    builder.build().execute(pool).await?;
                }
                RawPool::Sqlite(pool) => {
                    let mut builder = QueryBuilder::new("INSERT INTO inventory (sku, stock, initial_stock) ");
                    builder.push_values(rows, |mut b, (sku, stock)| {
                        b.push_bind(sku).push_bind(*stock).push_bind(*stock);
                    });
                    builder.push(
                        " ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock, \
                         initial_stock = excluded.initial_stock, version = 0",
                    );
                    builder.build().execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    async fn sku_count(&self) -> anyhow::Result<usize> {
        let count: i64 = match self {
            RawPool::Postgres(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM inventory")
                    .fetch_one(pool)
                    .await?
            }
            RawPool::Mariadb(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM inventory")
                    .fetch_one(pool)
                    .await?
            }
            RawPool::Sqlite(pool) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM inventory")
                    .fetch_one(pool)
                    .await?
            }
        };
        Ok(usize::try_from(count)?)
    }

    /// What the database holds, per SKU, for the audit: stock, initial stock, Σ ledger
    /// deltas and ledger rows, computed by the database itself.
    pub async fn audit_rows(&self) -> anyhow::Result<Vec<DbSkuRow>> {
        let rows: Vec<(String, i64, i64, i64, i64)> = match self {
            RawPool::Postgres(pool) => {
                sqlx::query_as(
                    "SELECT i.sku::text, \
                            (i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0))::bigint, \
                            i.initial_stock, COALESCE(SUM(l.delta), 0)::bigint, COUNT(l.id)::bigint \
                     FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku \
                     GROUP BY i.sku, i.stock, i.initial_stock",
                )
                .fetch_all(pool)
                .await?
            }
            RawPool::Mariadb(pool) => {
                sqlx::query_as(
                    "SELECT i.sku, \
                            CAST(i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED), \
                            i.initial_stock, CAST(COALESCE(SUM(l.delta), 0) AS SIGNED), CAST(COUNT(l.id) AS SIGNED) \
                     FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku \
                     GROUP BY i.sku, i.stock, i.initial_stock",
                )
                .fetch_all(pool)
                .await?
            }
            RawPool::Sqlite(pool) => {
                sqlx::query_as(
                    "SELECT i.sku, i.stock, i.initial_stock, \
                            COALESCE(SUM(l.delta), 0), COUNT(l.id) \
                     FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku \
                     GROUP BY i.sku, i.stock, i.initial_stock",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(rows
            .into_iter()
            .map(
                |(sku, stock, initial_stock, ledger_delta_sum, ledger_rows)| DbSkuRow {
                    sku,
                    stock,
                    initial_stock,
                    ledger_delta_sum,
                    ledger_rows,
                },
            )
            .collect())
    }

    /// The server version and its durability settings.
    pub async fn environment(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        match self {
            RawPool::Postgres(pool) => {
                let version: String = sqlx::query_scalar("SELECT version()").fetch_one(pool).await?;
                out.insert("version".to_owned(), version);
                for setting in [
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "full_page_writes",
                    "default_transaction_isolation",
                    "max_connections",
                    "shared_buffers",
                ] {
                    let value: String = sqlx::query_scalar("SELECT current_setting($1)")
                        .bind(setting)
                        .fetch_one(pool)
                        .await?;
                    out.insert(setting.to_owned(), value);
                }
            }
            RawPool::Mariadb(pool) => {
                let version: String = sqlx::query_scalar("SELECT VERSION()").fetch_one(pool).await?;
                out.insert("version".to_owned(), version);
                for variable in [
                    "innodb_flush_log_at_trx_commit",
                    "sync_binlog",
                    "log_bin",
                    "innodb_doublewrite",
                    "transaction_isolation",
                    "max_connections",
                    "innodb_buffer_pool_size",
                    "innodb_lock_wait_timeout",
                ] {
                    let row: Option<(String, String)> = sqlx::query_as(
                        "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES \
                         WHERE VARIABLE_NAME = UPPER(?)",
                    )
                    .bind(variable)
                    .fetch_optional(pool)
                    .await?;
                    if let Some((_, value)) = row {
                        out.insert(variable.to_owned(), value);
                    }
                }
            }
            RawPool::Sqlite(pool) => {
                let version: String = sqlx::query_scalar("SELECT sqlite_version()")
                    .fetch_one(pool)
                    .await?;
                out.insert("version".to_owned(), format!("SQLite {version}"));
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await?;
                let synchronous_name = match synchronous {
                    0 => "OFF",
                    1 => "NORMAL",
                    2 => "FULL",
                    3 => "EXTRA",
                    _ => "unknown",
                };
                out.insert(
                    "synchronous".to_owned(),
                    format!("{synchronous} ({synchronous_name})"),
                );
                let journal: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await?;
                out.insert("journal_mode".to_owned(), journal);
            }
        }
        Ok(out)
    }
}

/// One SKU as the database holds it after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSkuRow {
    /// SKU id.
    pub sku: String,
    /// Stock now.
    pub stock: i64,
    /// Stock at creation (the measured run's start).
    pub initial_stock: i64,
    /// Σ ledger deltas.
    pub ledger_delta_sum: i64,
    /// Ledger rows.
    pub ledger_rows: i64,
}

/// The raw SQL paths, which bypass every library layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOp {
    /// The guarded single statement the library's `Guarded` runs (`UPDATE … WHERE stock >=
    /// q` and the ledger insert), on a bare pool: no retry loop, no error mapping, no receipt.
    Guarded,
    /// The seed article's pessimistic flow on a bare pool: `BEGIN; SELECT … FOR UPDATE`,
    /// check, `UPDATE`, ledger insert, `COMMIT`.
    Pessimistic,
    /// NEGATIVE CONTROL: the seed article's unsafe read-check-write with no lock. It reads
    /// the stock, checks it, and writes `read − q` in a separate statement, so two
    /// concurrent requests can both pass the check and one update is lost: the shop sells
    /// more than it had. Kept only here, to prove that the audit catches the race.
    UnsafeNoLock,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn success(lock_wait: Duration) -> Outcome {
    Outcome::Success {
        attempts: 1,
        lock_wait_us: micros(lock_wait),
    }
}

fn error_outcome(backend: Backend, error: &sqlx::Error) -> Outcome {
    let kind = match error {
        sqlx::Error::Database(db) => {
            let code = db.code();
            let code = code.as_deref().unwrap_or("");
            match backend {
                Backend::Postgres => match code {
                    "40P01" => "deadlock",
                    "55P03" => "lock_timeout",
                    "40001" => "serialization_failure",
                    "23514" => "check_violation",
                    _ => "internal",
                },
                // sqlx reports the SQLSTATE: 40001 for deadlock (1213), HY000 for a lock wait
                // timeout (1205), 23000 for a CHECK violation (4025).
                Backend::Mariadb => match code {
                    "40001" => "deadlock",
                    "HY000" if db.message().contains("Lock wait timeout") => "lock_timeout",
                    "23000" if db.message().contains("CONSTRAINT") => "check_violation",
                    _ => "internal",
                },
                // SQLite reports the extended result code; the primary code is its low byte.
                Backend::Sqlite => match code.parse::<i32>().map(|c| c & 0xff) {
                    Ok(5) => "lock_timeout",
                    Ok(19) => "check_violation",
                    _ => "internal",
                },
            }
        }
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => "unavailable",
        _ => "internal",
    };
    Outcome::Error { kind, attempts: 1 }
}

impl RawPool {
    /// Runs one raw deduction and reports its outcome.
    pub async fn raw_deduct(&self, op: RawOp, sku: &str, units: i64) -> Outcome {
        let (backend, result) = match self {
            RawPool::Postgres(pool) => (Backend::Postgres, pg_raw(pool, op, sku, units).await),
            RawPool::Mariadb(pool) => (Backend::Mariadb, mysql_raw(pool, op, sku, units).await),
            RawPool::Sqlite(pool) => (Backend::Sqlite, sqlite_raw(pool, op, sku, units).await),
        };
        result.unwrap_or_else(|error| error_outcome(backend, &error))
    }
}

async fn pg_raw(pool: &PgPool, op: RawOp, sku: &str, units: i64) -> Result<Outcome, sqlx::Error> {
    match op {
        RawOp::Guarded => {
            let started = Instant::now();
            let row: Option<(i64,)> = sqlx::query_as(
                "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                            WHERE sku = $1 AND stock >= $2 RETURNING stock) \
                 INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                 SELECT $1, -$2, u.stock, 'deduct', NULL FROM u RETURNING id",
            )
            .bind(sku)
            .bind(units)
            .fetch_optional(pool)
            .await?;
            // Every SKU exists, so a miss means insufficient stock.
            Ok(row.map_or(Outcome::Refused, |_| success(started.elapsed())))
        }
        RawOp::Pessimistic => {
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE")
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            let waited = started.elapsed();
            if stock < units {
                tx.rollback().await?;
                return Ok(Outcome::Refused);
            }
            pg_write_read_minus_units(&mut *tx, sku, stock, units).await?;
            tx.commit().await?;
            Ok(success(waited))
        }
        RawOp::UnsafeNoLock => {
            // The race window: nothing stops another request between this read and the write.
            let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = $1")
                .bind(sku)
                .fetch_one(pool)
                .await?;
            if stock < units {
                return Ok(Outcome::Refused);
            }
            let started = Instant::now();
            pg_write_read_minus_units(pool, sku, stock, units).await?;
            Ok(success(started.elapsed()))
        }
    }
}

async fn mysql_raw(pool: &MySqlPool, op: RawOp, sku: &str, units: i64) -> Result<Outcome, sqlx::Error> {
    match op {
        RawOp::Guarded => {
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            let updated = sqlx::query(
                "UPDATE inventory SET stock = stock - ?, version = version + 1 WHERE sku = ? AND stock >= ?",
            )
            .bind(units)
            .bind(sku)
            .bind(units)
            .execute(&mut *tx)
            .await?;
            let waited = started.elapsed();
            if updated.rows_affected() == 0 {
                tx.rollback().await?;
                return Ok(Outcome::Refused);
            }
            // Neither MariaDB nor MySQL has UPDATE … RETURNING: read the new stock back
            // inside the transaction, as the adapter does.
            let remaining: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?")
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                 VALUES (?, ?, ?, 'deduct', NULL)",
            )
            .bind(sku)
            .bind(-units)
            .bind(remaining)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(success(waited))
        }
        RawOp::Pessimistic => {
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ? FOR UPDATE")
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            let waited = started.elapsed();
            if stock < units {
                tx.rollback().await?;
                return Ok(Outcome::Refused);
            }
            mysql_write_read_minus_units(&mut tx, sku, stock, units).await?;
            tx.commit().await?;
            Ok(success(waited))
        }
        RawOp::UnsafeNoLock => {
            let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?")
                .bind(sku)
                .fetch_one(pool)
                .await?;
            if stock < units {
                return Ok(Outcome::Refused);
            }
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            sqlx::query("UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?")
                .bind(stock - units)
                .bind(sku)
                .execute(&mut *tx)
                .await?;
            // Its wait is the UPDATE's row-lock wait alone, so not the shared helper.
            let waited = started.elapsed();
            sqlx::query(
                "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                 VALUES (?, ?, ?, 'deduct', NULL)",
            )
            .bind(sku)
            .bind(-units)
            .bind(stock - units)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(success(waited))
        }
    }
}

async fn sqlite_raw(pool: &SqlitePool, op: RawOp, sku: &str, units: i64) -> Result<Outcome, sqlx::Error> {
    match op {
        RawOp::Guarded => {
            let mut conn = pool.acquire().await?;
            let started = Instant::now();
            // BEGIN IMMEDIATE takes the write lock up front, as the adapter does, so the
            // transaction never has to upgrade a read lock (which SQLite cannot wait for).
            conn.execute("BEGIN IMMEDIATE").await?;
            let waited = started.elapsed();
            let body = async {
                let row: Option<(i64,)> = sqlx::query_as(
                    "UPDATE inventory SET stock = stock - ?2, version = version + 1 \
                     WHERE sku = ?1 AND stock >= ?2 RETURNING stock",
                )
                .bind(sku)
                .bind(units)
                .fetch_optional(&mut *conn)
                .await?;
                if let Some((after,)) = row {
                    sqlx::query(
                        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                         VALUES (?1, ?2, ?3, 'deduct', NULL)",
                    )
                    .bind(sku)
                    .bind(-units)
                    .bind(after)
                    .execute(&mut *conn)
                    .await?;
                }
                Ok::<_, sqlx::Error>(row.is_some())
            }
            .await;
            finish_sqlite(&mut conn, body, waited).await
        }
        RawOp::Pessimistic => {
            let mut conn = pool.acquire().await?;
            let started = Instant::now();
            conn.execute("BEGIN IMMEDIATE").await?;
            let waited = started.elapsed();
            let body = async {
                let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?1")
                    .bind(sku)
                    .fetch_one(&mut *conn)
                    .await?;
                if stock < units {
                    return Ok(false);
                }
                sqlite_write_read_minus_units(&mut conn, sku, stock, units).await?;
                Ok::<_, sqlx::Error>(true)
            }
            .await;
            finish_sqlite(&mut conn, body, waited).await
        }
        RawOp::UnsafeNoLock => {
            let stock: i64 = sqlx::query_scalar("SELECT stock FROM inventory WHERE sku = ?1")
                .bind(sku)
                .fetch_one(pool)
                .await?;
            if stock < units {
                return Ok(Outcome::Refused);
            }
            let mut conn = pool.acquire().await?;
            let started = Instant::now();
            conn.execute("BEGIN IMMEDIATE").await?;
            let waited = started.elapsed();
            let body = async {
                sqlite_write_read_minus_units(&mut conn, sku, stock, units).await?;
                Ok::<_, sqlx::Error>(true)
            }
            .await;
            finish_sqlite(&mut conn, body, waited).await
        }
    }
}

/// The write of the read-check-write flows (pessimistic, and the unlocked negative control):
/// stock := read − units, and its ledger row, in one statement.
async fn pg_write_read_minus_units<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Postgres>,
    sku: &str,
    stock: i64,
    units: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING stock) \
         INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
         SELECT $1, $3, u.stock, 'deduct', NULL FROM u",
    )
    .bind(sku)
    .bind(stock - units)
    .bind(-units)
    .execute(executor)
    .await?;
    Ok(())
}

/// As [`pg_write_read_minus_units`]: `UPDATE`, then the ledger `INSERT`, in the caller's
/// transaction.
async fn mysql_write_read_minus_units(
    tx: &mut sqlx::Transaction<'_, sqlx::MySql>,
    sku: &str,
    stock: i64,
    units: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?")
        .bind(stock - units)
        .bind(sku)
        .execute(&mut **tx)
        .await?;
    sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
         VALUES (?, ?, ?, 'deduct', NULL)",
    )
    .bind(sku)
    .bind(-units)
    .bind(stock - units)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// As [`pg_write_read_minus_units`], inside the caller's `BEGIN IMMEDIATE`.
async fn sqlite_write_read_minus_units(
    conn: &mut sqlx::SqliteConnection,
    sku: &str,
    stock: i64,
    units: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1")
        .bind(sku)
        .bind(stock - units)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
         VALUES (?1, ?2, ?3, 'deduct', NULL)",
    )
    .bind(sku)
    .bind(-units)
    .bind(stock - units)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

async fn finish_sqlite(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Sqlite>,
    body: Result<bool, sqlx::Error>,
    waited: Duration,
) -> Result<Outcome, sqlx::Error> {
    match body {
        Ok(true) => {
            conn.execute("COMMIT").await?;
            Ok(success(waited))
        }
        Ok(false) => {
            conn.execute("ROLLBACK").await?;
            Ok(Outcome::Refused)
        }
        Err(error) => {
            // Best effort: the connection goes back to the pool either way.
            let _ = conn.execute("ROLLBACK").await;
            Err(error)
        }
    }
}
