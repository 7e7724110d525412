//! What the harness does to a run's database around the measured requests: set the SKUs'
//! stock, read back what the audit needs, and record the server's version and durability
//! settings.

use std::collections::BTreeMap;

use sqlx::{Database, Encode, Executor, QueryBuilder, Type};

use super::RawPool;
use crate::audit::DbSkuRow;

/// Rows per bulk statement when creating SKUs (SQLite's and MariaDB's statement limits).
const BULK_CHUNK_ROWS: usize = 2_000;

/// Empties the ledger. Every reset does, so each run's ledger holds that run's rows alone.
const DELETE_LEDGER: &str = "DELETE FROM inventory_ledger";
/// `Sharded` buckets left by the warm-up go too: the measured run starts unsharded.
const DELETE_BUCKETS: &str = "DELETE FROM inventory_bucket";
/// … and with no SKU flagged as spread.
const CLEAR_SHARDED: &str = "UPDATE inventory SET sharded = FALSE WHERE sharded";
/// … and no incremental-audit checkpoint vouches for rows that are gone.
const DELETE_CHECKPOINTS: &str = "DELETE FROM inventory_audit_checkpoint";
const COUNT_SKUS: &str = "SELECT COUNT(*) FROM inventory";

const PG_SET_ALL_STOCK: &str = "UPDATE inventory SET stock = $1, initial_stock = $1, version = 0";
const MYSQL_SET_ALL_STOCK: &str = "UPDATE inventory SET stock = ?, initial_stock = ?, version = 0";
const SQLITE_SET_ALL_STOCK: &str = "UPDATE inventory SET stock = ?1, initial_stock = ?1, version = 0";

/// The start of the bulk upsert; `VALUES` rows follow from `QueryBuilder::push_values`.
const INSERT_SKUS: &str = "INSERT INTO inventory (sku, stock, initial_stock) ";
const PG_ON_CONFLICT: &str = " ON CONFLICT (sku) DO UPDATE SET stock = EXCLUDED.stock, \
                              initial_stock = EXCLUDED.initial_stock, version = 0";
const MYSQL_ON_CONFLICT: &str = " ON DUPLICATE KEY UPDATE stock = VALUES(stock), \
                                 initial_stock = VALUES(initial_stock), version = 0";
const SQLITE_ON_CONFLICT: &str = " ON CONFLICT (sku) DO UPDATE SET stock = excluded.stock, \
                                  initial_stock = excluded.initial_stock, version = 0";

// Per SKU: total stock (row plus `Sharded` buckets), initial stock, Σ ledger deltas, ledger
// rows, computed by the database itself. SQLite has no buckets. PostgreSQL's ledger has no
// foreign key to inventory, so a SKU only the ledger names comes back too (with stock and
// initial stock 0), and the audit reports it as a SKU the harness never made.
const PG_AUDIT_ROWS: &str = "SELECT COALESCE(i.sku, l.sku)::text, \
         COALESCE(i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0), 0)::bigint, \
         COALESCE(i.initial_stock, 0), COALESCE(SUM(l.delta), 0)::bigint, COUNT(l.id)::bigint, \
         COUNT(DISTINCT l.idempotency_key)::bigint \
     FROM inventory i FULL JOIN inventory_ledger l ON l.sku = i.sku \
     GROUP BY COALESCE(i.sku, l.sku), i.sku, i.stock, i.initial_stock";
const MYSQL_AUDIT_ROWS: &str = "SELECT i.sku, \
         CAST(i.stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED), \
         i.initial_stock, CAST(COALESCE(SUM(l.delta), 0) AS SIGNED), CAST(COUNT(l.id) AS SIGNED), \
         CAST(COUNT(DISTINCT l.idempotency_key) AS SIGNED) \
     FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku \
     GROUP BY i.sku, i.stock, i.initial_stock";
const SQLITE_AUDIT_ROWS: &str = "SELECT i.sku, i.stock, i.initial_stock, COALESCE(SUM(l.delta), 0), COUNT(l.id), \
         COUNT(DISTINCT l.idempotency_key) \
     FROM inventory i LEFT JOIN inventory_ledger l ON l.sku = i.sku \
     GROUP BY i.sku, i.stock, i.initial_stock";

const PG_VERSION: &str = "SELECT version()";
const PG_SETTING: &str = "SELECT current_setting($1)";
/// PostgreSQL settings that decide durability and concurrency.
const PG_SETTINGS: [&str; 7] = [
    "fsync",
    "synchronous_commit",
    "wal_sync_method",
    "full_page_writes",
    "default_transaction_isolation",
    "max_connections",
    "shared_buffers",
];
const MYSQL_VERSION: &str = "SELECT VERSION()";
const MYSQL_VARIABLE: &str = "SELECT VARIABLE_NAME, VARIABLE_VALUE FROM information_schema.GLOBAL_VARIABLES \
                              WHERE VARIABLE_NAME = UPPER(?)";
/// MySQL/MariaDB variables that decide durability and concurrency.
const MYSQL_VARIABLES: [&str; 8] = [
    "innodb_flush_log_at_trx_commit",
    "sync_binlog",
    "log_bin",
    "innodb_doublewrite",
    "transaction_isolation",
    "max_connections",
    "innodb_buffer_pool_size",
    "innodb_lock_wait_timeout",
];
const SQLITE_VERSION: &str = "SELECT sqlite_version()";
const SQLITE_SYNCHRONOUS: &str = "PRAGMA synchronous";
const SQLITE_JOURNAL_MODE: &str = "PRAGMA journal_mode";

/// One bulk upsert of SKUs with their stock (`initial_stock = stock`, version reset).
fn upsert_skus<'a, DB>(
    rows: impl IntoIterator<Item = (&'a String, &'a i64)>,
    on_conflict: &str,
) -> QueryBuilder<DB>
where
    DB: Database,
    DB::Arguments: Default,
    String: for<'q> Encode<'q, DB> + Type<DB>,
    i64: for<'q> Encode<'q, DB> + Type<DB>,
{
    let mut builder = QueryBuilder::new(INSERT_SKUS);
    builder.push_values(rows, |mut row, (sku, stock)| {
        row.push_bind(sku.clone()).push_bind(*stock).push_bind(*stock);
    });
    builder.push(on_conflict);
    builder
}

impl RawPool {
    /// Creates or resets SKUs to the given stock (`initial_stock = stock`), and empties the
    /// ledger. Used before warm-up and again before the measured run, so the measured run
    /// starts from a clean, reconciled state.
    pub async fn reset_inventory(&self, skus: &[String], stocks: &[i64]) -> anyhow::Result<()> {
        assert_eq!(skus.len(), stocks.len());
        let all_equal = stocks.windows(2).all(|w| w[0] == w[1]);
        let existing = self.sku_count().await?;
        match self {
            RawPool::Postgres(pool) => {
                for statement in [DELETE_LEDGER, DELETE_BUCKETS, CLEAR_SHARDED, DELETE_CHECKPOINTS] {
                    pool.execute(statement).await?;
                }
            }
            RawPool::MySql(pool) => {
                for statement in [DELETE_LEDGER, DELETE_BUCKETS, CLEAR_SHARDED, DELETE_CHECKPOINTS] {
                    pool.execute(statement).await?;
                }
            }
            RawPool::Sqlite(pool) => {
                pool.execute(DELETE_LEDGER).await?;
                pool.execute(DELETE_CHECKPOINTS).await?;
            }
        }
        if existing == skus.len() && all_equal {
            // One statement instead of one row per SKU: the common uniform case.
            let stock = stocks.first().copied().unwrap_or(0);
            match self {
                RawPool::Postgres(pool) => {
                    sqlx::query(PG_SET_ALL_STOCK).bind(stock).execute(pool).await?;
                }
                RawPool::MySql(pool) => {
                    sqlx::query(MYSQL_SET_ALL_STOCK)
                        .bind(stock)
                        .bind(stock)
                        .execute(pool)
                        .await?;
                }
                RawPool::Sqlite(pool) => {
                    sqlx::query(SQLITE_SET_ALL_STOCK)
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
                    let mut upsert = upsert_skus::<sqlx::Postgres>(rows, PG_ON_CONFLICT);
                    upsert.build().execute(pool).await?;
                }
                RawPool::MySql(pool) => {
                    let mut upsert = upsert_skus::<sqlx::MySql>(rows, MYSQL_ON_CONFLICT);
                    upsert.build().execute(pool).await?;
                }
                RawPool::Sqlite(pool) => {
                    let mut upsert = upsert_skus::<sqlx::Sqlite>(rows, SQLITE_ON_CONFLICT);
                    upsert.build().execute(pool).await?;
                }
            }
        }
        Ok(())
    }

    async fn sku_count(&self) -> anyhow::Result<usize> {
        let count: i64 = match self {
            RawPool::Postgres(pool) => sqlx::query_scalar(COUNT_SKUS).fetch_one(pool).await?,
            RawPool::MySql(pool) => sqlx::query_scalar(COUNT_SKUS).fetch_one(pool).await?,
            RawPool::Sqlite(pool) => sqlx::query_scalar(COUNT_SKUS).fetch_one(pool).await?,
        };
        Ok(usize::try_from(count)?)
    }

    /// What the database holds, per SKU, for the audit.
    pub async fn audit_rows(&self) -> anyhow::Result<Vec<DbSkuRow>> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = match self {
            RawPool::Postgres(pool) => sqlx::query_as(PG_AUDIT_ROWS).fetch_all(pool).await?,
            RawPool::MySql(pool) => sqlx::query_as(MYSQL_AUDIT_ROWS).fetch_all(pool).await?,
            RawPool::Sqlite(pool) => sqlx::query_as(SQLITE_AUDIT_ROWS).fetch_all(pool).await?,
        };
        Ok(rows
            .into_iter()
            .map(
                |(sku, stock, initial_stock, ledger_delta_sum, ledger_rows, ledger_keys)| DbSkuRow {
                    sku,
                    stock,
                    initial_stock,
                    ledger_delta_sum,
                    ledger_rows,
                    ledger_keys,
                },
            )
            .collect())
    }

    /// The server version and its durability settings.
    pub async fn environment(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        match self {
            RawPool::Postgres(pool) => {
                let version: String = sqlx::query_scalar(PG_VERSION).fetch_one(pool).await?;
                out.insert("version".to_owned(), version);
                for setting in PG_SETTINGS {
                    let value: String = sqlx::query_scalar(PG_SETTING)
                        .bind(setting)
                        .fetch_one(pool)
                        .await?;
                    out.insert(setting.to_owned(), value);
                }
            }
            RawPool::MySql(pool) => {
                let version: String = sqlx::query_scalar(MYSQL_VERSION).fetch_one(pool).await?;
                out.insert("version".to_owned(), version);
                for variable in MYSQL_VARIABLES {
                    let row: Option<(String, String)> = sqlx::query_as(MYSQL_VARIABLE)
                        .bind(variable)
                        .fetch_optional(pool)
                        .await?;
                    if let Some((_, value)) = row {
                        out.insert(variable.to_owned(), value);
                    }
                }
            }
            RawPool::Sqlite(pool) => {
                let version: String = sqlx::query_scalar(SQLITE_VERSION).fetch_one(pool).await?;
                out.insert("version".to_owned(), format!("SQLite {version}"));
                let synchronous: i64 = sqlx::query_scalar(SQLITE_SYNCHRONOUS).fetch_one(pool).await?;
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
                let journal: String = sqlx::query_scalar(SQLITE_JOURNAL_MODE).fetch_one(pool).await?;
                out.insert("journal_mode".to_owned(), journal);
            }
        }
        Ok(out)
    }
}
