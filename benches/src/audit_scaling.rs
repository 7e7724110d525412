//! How the audit's cost grows with the ledger, and what the incremental audit saves.
//!
//! Per database and ledger size: a fresh database whose ledger the database itself fills
//! (`generate_series`, a digits cross join, a recursive CTE: no client round trip per row),
//! the first incremental audit (it reads every row and stores the checkpoints), then real
//! deductions through the library, then the full audit, the full ledger reconciliation alone
//! and the incremental audit, each timed. Every audit must come back clean and the
//! incremental one must have read exactly the new rows; anything else is a problem that
//! fails the run.

use std::time::Instant;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::Executor;
use stockguard_api::AnyStore;
use stockguard_core::{AuditReport, DeductRequest, InventoryStore, Quantity, SkuId, Strategy};
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::measure::open_store;
use crate::report::Results;

/// Ledger rows per generating statement: bounds one transaction's size on every server.
const GENERATE_CHUNK_ROWS: u64 = 1_000_000;
/// Units each SKU keeps beyond its generated history, for the deductions that follow.
const STOCK_HEADROOM: i64 = 1_000_000;
/// Most ledger rows one case may generate.
pub const AUDIT_LEDGER_ROWS_MAX: u64 = 100_000_000;

/// One audit-scaling case.
#[derive(Debug, Clone, Copy)]
pub struct AuditScalingSpec {
    /// The database.
    pub backend: Backend,
    /// Ledger rows generated before the first audit.
    pub ledger_rows: u64,
    /// SKUs the rows are spread over (round robin).
    pub sku_count: u64,
    /// Deductions through the library after the checkpoint: the rows the incremental audit
    /// has to read.
    pub new_rows: u64,
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct AuditScalingResult {
    /// `postgres`, `mysql` or `sqlite`.
    pub engine: String,
    /// Ledger rows generated.
    pub ledger_rows: u64,
    /// SKUs.
    pub sku_count: u64,
    /// Deductions made after the checkpoint.
    pub new_rows: u64,
    /// Time to generate the ledger.
    pub generate_s: f64,
    /// The first incremental audit: no checkpoint yet, so it reads every row.
    pub first_incremental_s: f64,
    /// `audit()`: every row, every order and every hold (`stockguard audit --full`).
    pub full_audit_s: f64,
    /// The full ledger reconciliation alone (`snapshot()`): like for like with the
    /// incremental audit, which checks no orders or holds.
    pub full_reconcile_s: f64,
    /// `audit_incremental()`, checkpoints saved included.
    pub incremental_s: f64,
    /// Rows the incremental audit read.
    pub incremental_rows_read: u64,
    /// Rows its checkpoints vouched for.
    pub incremental_rows_checkpointed: u64,
}

impl AuditScalingResult {
    /// Full audit time ÷ incremental audit time.
    pub fn speedup_vs_full_audit(&self) -> f64 {
        self.full_audit_s / self.incremental_s.max(1e-9)
    }

    /// Full reconciliation time ÷ incremental audit time.
    pub fn speedup_vs_full_reconcile(&self) -> f64 {
        self.full_reconcile_s / self.incremental_s.max(1e-9)
    }
}

/// Runs one case in its own database, dropped afterwards.
pub async fn run_audit_scaling(spec: AuditScalingSpec) -> anyhow::Result<AuditScalingResult> {
    if spec.ledger_rows > AUDIT_LEDGER_ROWS_MAX || spec.sku_count == 0 || spec.new_rows == 0 {
        bail!("audit scaling needs 1..={AUDIT_LEDGER_ROWS_MAX} ledger rows, SKUs and new rows: {spec:?}");
    }
    in_fresh_database(spec.backend, async |database| run_in(spec, database).await).await
}

async fn run_in(spec: AuditScalingSpec, database: &FreshDatabase) -> anyhow::Result<AuditScalingResult> {
    let mut settings = stockguard_api::store::StoreSettings::new(database.target()?);
    settings.pool_size = 4;
    let store = open_store(settings).await?;
    let admin = RawPool::connect(database, 1).await?;
    let started = Instant::now();
    let generated = generate(&admin, spec).await.context("generating the ledger");
    admin.close().await;
    generated?;
    let generate_s = started.elapsed().as_secs_f64();
    let outcome = audit_around_deductions(&store, spec, generate_s).await;
    store.close().await;
    outcome
}

async fn audit_around_deductions(
    store: &AnyStore,
    spec: AuditScalingSpec,
    generate_s: f64,
) -> anyhow::Result<AuditScalingResult> {
    let (first, first_incremental_s) = timed(store.audit_incremental()).await?;
    clean(first.is_clean(), "first incremental", &first)?;
    if first.ledger_rows_verified != spec.ledger_rows {
        bail!(
            "the first incremental audit read {} rows of {}",
            first.ledger_rows_verified,
            spec.ledger_rows
        );
    }
    let one = Quantity::new(1).expect("1 is a quantity");
    for i in 0..spec.new_rows {
        let sku = SkuId::parse(sku_name(i % spec.sku_count)).expect("generated SKU ids are valid");
        store
            .deduct(DeductRequest::new(sku, one, Strategy::Guarded))
            .await
            .context("a deduction after the checkpoint")?;
    }
    let (full, full_audit_s) = timed(store.audit()).await?;
    clean(full.is_clean(), "full", &full)?;
    let (snapshots, full_reconcile_s) = timed(store.snapshot()).await?;
    let reconciled = AuditReport::from_snapshots(&snapshots);
    clean(reconciled.is_clean(), "full reconciliation", &reconciled)?;
    let (incremental, incremental_s) = timed(store.audit_incremental()).await?;
    clean(incremental.is_clean(), "incremental", &incremental)?;
    // Nothing writes beside these audits, so no row can commit below a checkpoint's mark: the
    // incremental audit must read the new rows and nothing else.
    if incremental.ledger_rows_verified != spec.new_rows || incremental.skus_reread != 0 {
        bail!(
            "the incremental audit read more than the {} new rows: {incremental:?}",
            spec.new_rows
        );
    }
    let total = spec.ledger_rows + spec.new_rows;
    if incremental.ledger_rows_verified + incremental.ledger_rows_checkpointed != total
        || full.ledger_rows != total
    {
        bail!("the audits disagree on the ledger ({total} rows): full {full:?}, incremental {incremental:?}");
    }
    Ok(AuditScalingResult {
        engine: spec.backend.to_string(),
        ledger_rows: spec.ledger_rows,
        sku_count: spec.sku_count,
        new_rows: spec.new_rows,
        generate_s,
        first_incremental_s,
        full_audit_s,
        full_reconcile_s,
        incremental_s,
        incremental_rows_read: incremental.ledger_rows_verified,
        incremental_rows_checkpointed: incremental.ledger_rows_checkpointed,
    })
}

async fn timed<T, E>(call: impl Future<Output = Result<T, E>>) -> anyhow::Result<(T, f64)>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let started = Instant::now();
    let value = call.await?;
    Ok((value, started.elapsed().as_secs_f64()))
}

fn clean(is_clean: bool, which: &str, report: &impl std::fmt::Debug) -> anyhow::Result<()> {
    if !is_clean {
        bail!("the {which} audit found a discrepancy in a generated ledger: {report:?}");
    }
    Ok(())
}

fn sku_name(index: u64) -> String {
    format!("audit-{index}")
}

// Per database: SKUs `audit-0..n`, then ledger rows `[from, to)` with SKU `n mod skus`, each
// one unit deducted; then every SKU's stock set so that it reconciles, with headroom.
const PG_SKUS: &str = "INSERT INTO inventory (sku, stock, initial_stock) \
     SELECT 'audit-' || g, 0, 0 FROM generate_series(0, $1 - 1) g";
const PG_ROWS: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
     SELECT 'audit-' || (g % $3), -1, 0, 'deduct' FROM generate_series($1, $2 - 1) g";
const MYSQL_SKUS: &str = "INSERT INTO inventory (sku, stock, initial_stock) \
     SELECT CONCAT('audit-', n), 0, 0 FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS n \
     FROM digits a, digits b, digits c, digits e, digits f) s WHERE n < ?";
const MYSQL_ROWS: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
     SELECT CONCAT('audit-', (? + n) MOD ?), -1, 0, 'deduct' FROM \
     (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * g.d AS n \
     FROM digits a, digits b, digits c, digits e, digits f, digits g) s WHERE n < ?";
const MYSQL_DIGITS: &str = "CREATE TEMPORARY TABLE digits (d INT NOT NULL PRIMARY KEY)";
const MYSQL_FILL_DIGITS: &str = "INSERT INTO digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)";
const SQLITE_SKUS: &str = "WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n + 1 < ?1) \
     INSERT INTO inventory (sku, stock, initial_stock) SELECT 'audit-' || n, 0, 0 FROM g";
const SQLITE_ROWS: &str = "WITH RECURSIVE g(n) AS (SELECT ?1 UNION ALL SELECT n + 1 FROM g WHERE n + 1 < ?2) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason) \
     SELECT 'audit-' || (n % ?3), -1, 0, 'deduct' FROM g";
/// Every SKU: initial = its rows + headroom, stock = headroom, so `initial + Σ = stock`.
const SET_STOCK: &str = "UPDATE inventory SET stock = ?, initial_stock = ? + \
     (SELECT COUNT(*) FROM inventory_ledger l WHERE l.sku = inventory.sku)";
const PG_SET_STOCK: &str = "UPDATE inventory i SET stock = $1, initial_stock = $1 + c.n \
     FROM (SELECT sku, COUNT(*) AS n FROM inventory_ledger GROUP BY sku) c WHERE c.sku = i.sku";

async fn generate(admin: &RawPool, spec: AuditScalingSpec) -> anyhow::Result<()> {
    let skus = i64::try_from(spec.sku_count)?;
    let chunks = (0..spec.ledger_rows)
        .step_by(usize::try_from(GENERATE_CHUNK_ROWS)?)
        .map(|from| (from, (from + GENERATE_CHUNK_ROWS).min(spec.ledger_rows)));
    match admin {
        RawPool::Postgres(pool) => {
            sqlx::query(PG_SKUS).bind(skus).execute(pool).await?;
            for (from, to) in chunks {
                sqlx::query(PG_ROWS)
                    .bind(i64::try_from(from)?)
                    .bind(i64::try_from(to)?)
                    .bind(skus)
                    .execute(pool)
                    .await?;
            }
            sqlx::query(PG_SET_STOCK)
                .bind(STOCK_HEADROOM)
                .execute(pool)
                .await?;
            // Fresh statistics, as a server that has been running would have them.
            pool.execute("VACUUM ANALYZE inventory_ledger").await?;
        }
        RawPool::MySql(pool) => {
            // One connection: the digits table is temporary, so it lives on it alone.
            let mut connection = pool.acquire().await?;
            connection.execute(MYSQL_DIGITS).await?;
            connection.execute(MYSQL_FILL_DIGITS).await?;
            if spec.sku_count > 100_000 {
                bail!("audit scaling on MySQL generates at most 100 000 SKUs");
            }
            sqlx::query(MYSQL_SKUS)
                .bind(skus)
                .execute(&mut *connection)
                .await?;
            for (from, to) in chunks {
                sqlx::query(MYSQL_ROWS)
                    .bind(i64::try_from(from)?)
                    .bind(skus)
                    .bind(i64::try_from(to - from)?)
                    .execute(&mut *connection)
                    .await?;
            }
            sqlx::query(SET_STOCK)
                .bind(STOCK_HEADROOM)
                .bind(STOCK_HEADROOM)
                .execute(&mut *connection)
                .await?;
            connection.execute("ANALYZE TABLE inventory_ledger").await?;
        }
        RawPool::Sqlite(pool) => {
            sqlx::query(SQLITE_SKUS).bind(skus).execute(pool).await?;
            for (from, to) in chunks {
                sqlx::query(SQLITE_ROWS)
                    .bind(i64::try_from(from)?)
                    .bind(i64::try_from(to)?)
                    .bind(skus)
                    .execute(pool)
                    .await?;
            }
            sqlx::query(SET_STOCK)
                .bind(STOCK_HEADROOM)
                .bind(STOCK_HEADROOM)
                .execute(pool)
                .await?;
            pool.execute("ANALYZE").await?;
        }
    }
    Ok(())
}

/// The profile's cases: every database × every ledger size.
pub fn audit_scaling_specs(
    databases: &[Backend],
    ledger_rows: &[u64],
    sku_count: u64,
) -> Vec<AuditScalingSpec> {
    databases
        .iter()
        .flat_map(|&backend| {
            ledger_rows.iter().map(move |&rows| AuditScalingSpec {
                backend,
                ledger_rows: rows,
                sku_count,
                // 0.1 % of the ledger, at least 100: a day's trade on a long history.
                new_rows: (rows / 1_000).max(100),
            })
        })
        .collect()
}

/// Runs every case in turn, logging each; a case that fails is a case error (the run fails).
pub async fn run_audit_scaling_cases(
    specs: Vec<AuditScalingSpec>,
    log: &impl Fn(String),
    results: &mut Results,
) {
    for spec in specs {
        let label = format!(
            "audit scaling {}: {} ledger rows over {} SKUs, then {} deductions",
            spec.backend, spec.ledger_rows, spec.sku_count, spec.new_rows
        );
        match run_audit_scaling(spec).await {
            Ok(case) => {
                log(format!(
                    "{label}: full audit {:.3} s, incremental {:.3} s ({:.1}x)",
                    case.full_audit_s,
                    case.incremental_s,
                    case.speedup_vs_full_audit()
                ));
                results.audit_scaling.push(case);
            }
            Err(error) => {
                log(format!("CASE FAILED: {label}: {error:#}"));
                results.case_errors.push(format!("{label}: {error:#}"));
            }
        }
    }
}
