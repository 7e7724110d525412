//! Reads what the checker judges straight from the database (never through the proxy or
//! the service): every SKU with its buckets, and every ledger row.

use anyhow::Context;
use sqlx::Connection;
use sqlx::mysql::MySqlConnection;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use stockguard_testkit::Backend;

use super::checker::{DbState, LedgerRow, SkuState};

type SkuTuple = (String, i64, i64, i64, i64);
type LedgerTuple = (i64, String, i64, i64, String, Option<String>);

const PG_SKUS: &str = "SELECT i.sku::text, i.stock, i.initial_stock, \
         COALESCE(SUM(b.stock), 0)::bigint, COALESCE(MIN(b.stock), 0)::bigint \
     FROM inventory i LEFT JOIN inventory_bucket b ON b.sku = i.sku \
     GROUP BY i.sku, i.stock, i.initial_stock ORDER BY i.sku";
const PG_LEDGER: &str = "SELECT id, sku::text, delta, stock_after, reason, idempotency_key::text \
     FROM inventory_ledger ORDER BY id";
const MYSQL_SKUS: &str = "SELECT i.sku, i.stock, i.initial_stock, \
         CAST(COALESCE(SUM(b.stock), 0) AS SIGNED), CAST(COALESCE(MIN(b.stock), 0) AS SIGNED) \
     FROM inventory i LEFT JOIN inventory_bucket b ON b.sku = i.sku \
     GROUP BY i.sku, i.stock, i.initial_stock ORDER BY i.sku";
const MYSQL_LEDGER: &str = "SELECT id, sku, delta, stock_after, reason, idempotency_key \
     FROM inventory_ledger ORDER BY id";
/// SQLite has no buckets.
const SQLITE_SKUS: &str = "SELECT sku, stock, initial_stock, 0, 0 FROM inventory ORDER BY sku";
const SQLITE_LEDGER: &str = MYSQL_LEDGER;

/// Reads every SKU and ledger row of the database at `url` (for SQLite, a file path).
pub async fn read_state(backend: Backend, url: &str) -> anyhow::Result<DbState> {
    let (skus, ledger): (Vec<SkuTuple>, Vec<LedgerTuple>) = match backend {
        Backend::Postgres => {
            let mut conn = PgConnection::connect(url).await?;
            let skus = sqlx::query_as(PG_SKUS).fetch_all(&mut conn).await?;
            let ledger = sqlx::query_as(PG_LEDGER).fetch_all(&mut conn).await?;
            conn.close().await?;
            (skus, ledger)
        }
        Backend::MySql => {
            let mut conn = MySqlConnection::connect(url).await?;
            let skus = sqlx::query_as(MYSQL_SKUS).fetch_all(&mut conn).await?;
            let ledger = sqlx::query_as(MYSQL_LEDGER).fetch_all(&mut conn).await?;
            conn.close().await?;
            (skus, ledger)
        }
        Backend::Sqlite => {
            let options = SqliteConnectOptions::new().filename(url).create_if_missing(false);
            let mut conn = SqliteConnection::connect_with(&options).await?;
            let skus = sqlx::query_as(SQLITE_SKUS).fetch_all(&mut conn).await?;
            let ledger = sqlx::query_as(SQLITE_LEDGER).fetch_all(&mut conn).await?;
            conn.close().await?;
            (skus, ledger)
        }
    };
    let skus = skus
        .into_iter()
        .map(
            |(sku, stock, initial_stock, bucket_stock, min_bucket_stock)| SkuState {
                sku,
                stock,
                bucket_stock,
                min_bucket_stock,
                initial_stock,
            },
        )
        .collect();
    let ledger = ledger
        .into_iter()
        .map(|(id, sku, delta, stock_after, reason, key)| LedgerRow {
            id,
            sku,
            delta,
            stock_after,
            reason,
            key,
        })
        .collect();
    Ok(DbState { skus, ledger })
}

/// Runs `stockguard audit --full` and then `stockguard audit` (incremental; with no
/// checkpoint yet it reads every row, so both judge the whole ledger) against the database
/// directly: the first failing exit code (else 0) and both outputs.
pub async fn run_audit(bin: &std::path::Path, database_url: &str) -> anyhow::Result<(Option<i32>, String)> {
    let mut code = Some(0);
    let mut text = String::new();
    for mode in [&["--full"][..], &[][..]] {
        let mut command = tokio::process::Command::new(bin);
        command
            .arg("audit")
            .args(mode)
            .env("STOCKGUARD_DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .env_remove("STOCKGUARD_CONFIG")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let output = tokio::time::timeout(std::time::Duration::from_secs(60), command.output())
            .await
            .context("stockguard audit took over 60 s")?
            .with_context(|| format!("running {} audit", bin.display()))?;
        text.push_str(&String::from_utf8_lossy(&output.stdout));
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if code == Some(0) {
            code = output.status.code();
        }
    }
    Ok((code, text))
}
