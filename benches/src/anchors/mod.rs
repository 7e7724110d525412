//! The anchors: what the databases and Redis alone reach for each deduction pattern, run by
//! their own benchmark binaries (pgbench, sysbench, redis-benchmark) on the same servers, in
//! the same run as the library's cases, so every strategy's figure reads as a share of the
//! ceiling it chases (report.md, "Anchors"). No application code is involved: the SQL and
//! Lua are `../shared/anchors/`'s own (see `scripts`).

mod plan;
mod redis_lua;
mod scripts;
mod tools;

use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use sqlx::AssertSqlSafe;
use stockguard_core::Strategy;
use stockguard_testkit::Backend;
use tokio::process::Command;

pub use plan::{AnchorPlan, AnchorSet, anchor_specs, plan_anchors, run_anchor_plan};
pub use redis_lua::{LuaMode, LuaSpec, lua_specs, run_lua_anchor};
pub use scripts::AnchorCase;
pub use tools::Endpoint;

use crate::case::Variant;
use crate::db::{self, FreshDatabase, RawPool};
use crate::raw::RawOp;
use tools::{TOOL_GRACE, pgbench_tps, run_bounded, sysbench_tps, version, write_script};

/// The stock every anchor SKU starts with: never sold out, as in the scripts.
const ANCHOR_INITIAL_STOCK: i64 = 1_000_000_000_000;
/// SKUs in the anchors' low-conflict cases (the scripts' table size).
pub const ANCHOR_WIDE_SKUS: usize = 100_000;

/// One anchor case on one database.
#[derive(Debug, Clone)]
pub struct AnchorSpec {
    /// PostgreSQL (pgbench) or MySQL/MariaDB (sysbench).
    pub backend: Backend,
    /// The pattern.
    pub case: AnchorCase,
    /// SKUs the requests spread over (uniformly).
    pub sku_count: usize,
    /// Concurrent clients (connections).
    pub clients: usize,
    /// The tool's run length (both tools take whole seconds).
    pub seconds: u64,
}

/// What one anchor case reached.
#[derive(Debug, Clone, Serialize)]
pub struct AnchorResult {
    /// `postgres`, `mysql` or `redis`.
    pub engine: String,
    /// The binary's own version line.
    pub tool: String,
    /// The pattern (`guarded`, `batch32`, `lua_refuse`, …).
    pub case: String,
    /// SKUs (1 for Redis: one counter).
    pub sku_count: usize,
    /// Concurrent clients.
    pub clients: usize,
    /// Requests each client keeps in flight (redis-benchmark's `-P`; 1 elsewhere).
    pub pipeline: u32,
    /// Measured seconds.
    pub seconds: f64,
    /// Transactions (calls) per second, as the tool printed it.
    pub transactions_per_s: f64,
    /// Units deducted per second: ledger rows written ÷ seconds (Redis: units taken from
    /// the counter, or refusals for the refusing case).
    pub units_per_s: f64,
}

/// The anchor a library strategy or raw baseline is chasing: the same pattern done by the
/// database alone, or for the coalescing strategies the batched transaction.
pub fn ceiling_for(variant: Variant) -> Option<AnchorCase> {
    Some(match variant {
        Variant::Library(Strategy::Pessimistic | Strategy::NoWait) | Variant::Raw(RawOp::Pessimistic) => {
            AnchorCase::Pessimistic
        }
        Variant::Library(Strategy::Optimistic) => AnchorCase::Optimistic,
        Variant::Library(Strategy::Guarded) | Variant::Raw(RawOp::Guarded) => AnchorCase::Guarded,
        Variant::Library(Strategy::Coalesced | Strategy::Sharded) => AnchorCase::Batch { size: 32 },
        // The negative control chases nothing; a strategy added later has no anchor yet.
        Variant::Raw(RawOp::UnsafeNoLock) | Variant::Library(_) => return None,
    })
}

/// The stretch ceiling of the coalescing strategies: a batch of 128 from a single client.
pub const STRETCH_CEILING: AnchorCase = AnchorCase::Batch { size: 128 };

/// The tool that runs `backend`'s anchors.
pub fn tool_for(backend: Backend) -> &'static str {
    match backend {
        Backend::MySql => "sysbench",
        _ => "pgbench",
    }
}

/// Whether the tool of every backend in `specs` runs here: `Err` names each missing one.
pub async fn tools_present(backends: &[Backend], with_redis: bool) -> Result<(), String> {
    let mut missing = Vec::new();
    let mut tools: Vec<&str> = backends.iter().map(|b| tool_for(*b)).collect();
    if with_redis {
        tools.push("redis-benchmark");
    }
    tools.dedup();
    for tool in tools {
        if let Err(reason) = version(tool).await {
            missing.push(reason);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(missing.join("; "))
    }
}

/// Runs `specs` (all on one backend) in one fresh database made from the scripts' schema,
/// then checks what the scripts check: no negative stock, and every SKU's stock equal to its
/// initial stock plus its log's deltas. Returns the results and any check that failed.
pub async fn run_backend_anchors(
    backend: Backend,
    specs: &[AnchorSpec],
    log: &dyn Fn(String),
) -> anyhow::Result<(Vec<AnchorResult>, Vec<String>)> {
    let tool = tool_for(backend);
    let tool_version = version(tool).await.map_err(anyhow::Error::msg)?;
    db::in_fresh_database(backend, async |database: &FreshDatabase| {
        let pool = RawPool::connect(database, 2).await?;
        let statements = match backend {
            Backend::MySql => {
                let version: String = scalar(&pool, "SELECT VERSION()").await?;
                scripts::mysql_schema_statements(version.to_lowercase().contains("mariadb"))
            }
            _ => scripts::pg_schema_statements(),
        };
        for statement in statements {
            execute(&pool, statement)
                .await
                .with_context(|| format!("anchor schema: {statement}"))?;
        }
        let dir = tempfile_dir()?;
        let mut results = Vec::new();
        for spec in specs {
            let before: i64 = scalar(&pool, "SELECT count(*) FROM inventory_log").await?;
            let transactions_per_s = match backend {
                Backend::MySql => run_sysbench(database, spec, dir.path()).await?,
                _ => run_pgbench(database, spec, dir.path()).await?,
            };
            let after: i64 = scalar(&pool, "SELECT count(*) FROM inventory_log").await?;
            let seconds = spec.seconds as f64;
            let result = AnchorResult {
                engine: backend.as_str().to_owned(),
                tool: tool_version.clone(),
                case: spec.case.name(),
                sku_count: spec.sku_count,
                clients: spec.clients,
                pipeline: 1,
                seconds,
                transactions_per_s,
                units_per_s: (after - before) as f64 / seconds,
            };
            log(format!(
                "{:<52} {:>9.0} units/s {:>8.0} txn/s",
                format!(
                    "{backend} anchor {} {}x{}",
                    result.case, spec.sku_count, spec.clients
                ),
                result.units_per_s,
                result.transactions_per_s
            ));
            results.push(result);
        }
        let mut problems = Vec::new();
        let negative: i64 = scalar(&pool, "SELECT count(*) FROM inventory WHERE stock < 0").await?;
        let mismatched: i64 = scalar(
            &pool,
            &format!(
                "SELECT count(*) FROM inventory i LEFT JOIN (SELECT sku, sum(delta) s FROM inventory_log \
                 GROUP BY sku) l ON l.sku = i.sku WHERE {ANCHOR_INITIAL_STOCK} + coalesce(l.s, 0) <> i.stock"
            ),
        )
        .await?;
        if negative != 0 || mismatched != 0 {
            problems.push(format!(
                "{backend} anchors: {negative} SKUs with negative stock, {mismatched} SKUs whose stock \
                 differs from the initial stock plus their log's deltas"
            ));
        }
        pool.close().await;
        Ok((results, problems))
    })
    .await
}

fn tempfile_dir() -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("sg-anchor-")
        .tempdir()
        .context("a temp dir for the anchor scripts")
}

async fn run_pgbench(
    database: &FreshDatabase,
    spec: &AnchorSpec,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let file = write_script(
        dir,
        &format!("{}.sql", spec.case.name()),
        &spec.case.pgbench_script(),
    )?;
    let mut command = Command::new("pgbench");
    command
        .args([
            "-n",
            "-T",
            &spec.seconds.to_string(),
            "-c",
            &spec.clients.to_string(),
        ])
        .args(["-j", &spec.clients.min(2).to_string()])
        .args(["-D", &format!("nsku={}", spec.sku_count), "-f"])
        .arg(&file)
        .arg(database.url());
    let out = run_bounded(
        command,
        Duration::from_secs(spec.seconds) + TOOL_GRACE,
        &format!("pgbench {}", spec.case.name()),
    )
    .await?;
    pgbench_tps(&out)
}

async fn run_sysbench(
    database: &FreshDatabase,
    spec: &AnchorSpec,
    dir: &std::path::Path,
) -> anyhow::Result<f64> {
    let (mode, lua) = spec.case.sysbench_mode_and_script();
    let file = write_script(dir, &format!("{}.lua", spec.case.name()), &lua)?;
    let endpoint = Endpoint::parse(&database.url())?;
    let mut command = Command::new("sysbench");
    command
        .current_dir(dir)
        .env("MODE", mode)
        .env("NSKU", spec.sku_count.to_string())
        .arg(&file)
        .args(["--db-driver=mysql", &format!("--mysql-host={}", endpoint.host)])
        .arg(format!("--mysql-port={}", endpoint.port.unwrap_or(3306)))
        .arg(format!(
            "--mysql-user={}",
            endpoint.user.as_deref().unwrap_or("root")
        ))
        .arg(format!(
            "--mysql-db={}",
            endpoint.database.as_deref().unwrap_or_default()
        ))
        .args([
            &format!("--threads={}", spec.clients),
            &format!("--time={}", spec.seconds),
            "--report-interval=0",
            "--mysql-ignore-errors=1213,1205",
            "run",
        ]);
    if let Some(password) = &endpoint.password {
        command.arg(format!("--mysql-password={password}"));
    }
    let out = run_bounded(
        command,
        Duration::from_secs(spec.seconds) + TOOL_GRACE,
        &format!("sysbench {}", spec.case.name()),
    )
    .await?;
    sysbench_tps(&out)
}

async fn execute(pool: &RawPool, sql: &str) -> anyhow::Result<()> {
    match pool {
        RawPool::Postgres(pool) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .map(drop)?,
        RawPool::MySql(pool) => sqlx::raw_sql(AssertSqlSafe(sql.to_owned()))
            .execute(pool)
            .await
            .map(drop)?,
        RawPool::Sqlite(_) => anyhow::bail!("the anchors run on the server databases only"),
    }
    Ok(())
}

/// One value of one row, read on a server database.
async fn scalar<T>(pool: &RawPool, sql: &str) -> anyhow::Result<T>
where
    T: Send + Unpin,
    (T,): for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + for<'r> sqlx::FromRow<'r, sqlx::mysql::MySqlRow>,
{
    Ok(match pool {
        RawPool::Postgres(pool) => {
            sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await?
        }
        RawPool::MySql(pool) => {
            sqlx::query_scalar(AssertSqlSafe(sql.to_owned()))
                .fetch_one(pool)
                .await?
        }
        RawPool::Sqlite(_) => anyhow::bail!("the anchors run on the server databases only"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_but_the_negative_control_chases_a_ceiling() {
        for variant in Variant::all() {
            assert_eq!(
                ceiling_for(*variant).is_none(),
                variant.is_negative_control(),
                "{variant:?}"
            );
        }
        assert_eq!(
            ceiling_for(Variant::Library(Strategy::Coalesced)),
            Some(AnchorCase::Batch { size: 32 })
        );
    }

    #[test]
    fn each_profile_runs_what_the_report_compares() {
        let servers = [Backend::Postgres, Backend::MySql, Backend::Sqlite];
        let smoke = anchor_specs(AnchorSet::Smoke, &servers, 32);
        assert_eq!(smoke.len(), 4, "two cases on each server, none on SQLite");
        assert!(
            smoke
                .iter()
                .all(|s| s.backend != Backend::Sqlite && s.seconds == 1)
        );
        let quick = anchor_specs(AnchorSet::Quick, &[Backend::Postgres], 64);
        for case in [
            AnchorCase::Pessimistic,
            AnchorCase::Optimistic,
            AnchorCase::Guarded,
        ] {
            assert!(
                quick
                    .iter()
                    .any(|s| s.case == case && s.sku_count == 1 && s.clients == 64)
            );
            assert!(
                quick
                    .iter()
                    .any(|s| s.case == case && s.sku_count == ANCHOR_WIDE_SKUS)
            );
        }
        assert!(quick.iter().any(|s| s.case == STRETCH_CEILING && s.clients == 1));
        assert!(
            quick
                .iter()
                .any(|s| s.case == AnchorCase::Batch { size: 32 } && s.sku_count == 1 && s.clients == 2),
            "batch32 at the requesters' units in flight (64 / 32 clients)"
        );
        let full = anchor_specs(AnchorSet::Full, &[Backend::MySql], 64);
        assert!(full.len() > quick.len() && full.iter().all(|s| s.seconds == 10));
        assert!(
            full.iter()
                .any(|s| s.case == AnchorCase::Batch { size: 32 } && s.clients == 8)
        );
    }
}
