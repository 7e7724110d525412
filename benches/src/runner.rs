//! Drives a workload through one deduction path with many concurrent requesters, and runs
//! one case end to end: fresh database, warm-up, stock sizing, measured run, audit, drop.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use stockguard_core::{DeductError, DeductRequest, InventoryStore, Quantity, SkuId, Strategy};

use crate::audit::{AuditOutcome, audit};
use crate::db::{Backend, FreshDatabase, RawOp, RawPool};
use crate::tally::{Outcome, Tally};
use crate::workload::{LevelSpec, QuantityDist, RequestStream, sku_name};

/// One deduction path under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// A library strategy, through `InventoryStore::deduct`.
    Library(Strategy),
    /// Raw SQL on a bare sqlx pool: a baseline or the negative control.
    Raw(RawOp),
}

impl Variant {
    /// Every variant: the library strategies, the two raw baselines, the negative control.
    pub fn all() -> Vec<Variant> {
        let mut all: Vec<Variant> = Strategy::ALL.into_iter().map(Variant::Library).collect();
        all.extend([
            Variant::Raw(RawOp::Guarded),
            Variant::Raw(RawOp::Pessimistic),
            Variant::Raw(RawOp::UnsafeNoLock),
        ]);
        all
    }

    /// The name used in reports and flags.
    pub fn name(self) -> String {
        match self {
            Variant::Library(strategy) => strategy.as_str().to_owned(),
            Variant::Raw(RawOp::Guarded) => "raw_guarded".to_owned(),
            Variant::Raw(RawOp::Pessimistic) => "raw_pessimistic".to_owned(),
            Variant::Raw(RawOp::UnsafeNoLock) => "unsafe_no_lock".to_owned(),
        }
    }

    /// Parses a name from [`Variant::name`].
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        Variant::all()
            .into_iter()
            .find(|v| v.name() == raw)
            .with_context(|| {
                let names: Vec<String> = Variant::all().into_iter().map(Variant::name).collect();
                format!("unknown strategy/variant {raw:?}; known: {}", names.join(", "))
            })
    }

    /// True for the seed's unsafe flow, whose audit failure is expected.
    pub fn is_negative_control(self) -> bool {
        self == Variant::Raw(RawOp::UnsafeNoLock)
    }
}

// Serialized as its report name (`guarded`, `raw_guarded`, …) so library strategies and raw
// baselines can never be confused in results.json.
impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.name())
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// How requests reach the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Requesters call `InventoryStore::deduct` directly ([`LibraryDeductor`]).
    InProcess,
    /// Requesters call the `stockguard` HTTP service (`POST /v1/skus/{sku}/deduct`), which
    /// runs in the same process on its own runtime over the same kind of store
    /// ([`crate::http::HttpDeductor`]).
    Http,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 2] = [Transport::InProcess, Transport::Http];

    /// The name used in flags and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::InProcess => "in_process",
            Transport::Http => "http",
        }
    }

    /// Whether `variant` can run over this transport: HTTP reaches only the library (the raw
    /// baselines and the negative control bypass it, so they always run in-process).
    pub fn carries(self, variant: Variant) -> bool {
        match self {
            Transport::InProcess => true,
            Transport::Http => matches!(variant, Variant::Library(_)),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = anyhow::Error;
    /// `in-process` (or `in_process`) or `http`.
    fn from_str(raw: &str) -> anyhow::Result<Self> {
        match raw {
            "in-process" | "in_process" | "inprocess" => Ok(Transport::InProcess),
            "http" => Ok(Transport::Http),
            _ => bail!("unknown transport {raw:?}: use in-process or http"),
        }
    }
}

/// Something that performs one deduction of `units` from SKU index `sku_index`.
pub trait Deductor: Send + Sync + 'static {
    /// Performs it and reports the outcome.
    fn deduct(&self, sku_index: usize, units: u32) -> impl Future<Output = Outcome> + Send;
}

/// The real library: `InventoryStore::deduct` with one strategy.
#[derive(Debug)]
pub struct LibraryDeductor<S> {
    store: Arc<S>,
    skus: Arc<Vec<SkuId>>,
    strategy: Strategy,
}

impl<S: InventoryStore> Deductor for LibraryDeductor<S> {
    async fn deduct(&self, sku_index: usize, units: u32) -> Outcome {
        let quantity = Quantity::new(i64::from(units)).expect("workload quantities are in range");
        let request = DeductRequest::new(self.skus[sku_index].clone(), quantity, self.strategy);
        match self.store.deduct(request).await {
            Ok(receipt) => Outcome::Success {
                attempts: receipt.attempts,
                lock_wait_us: receipt.lock_wait_us,
            },
            Err(DeductError::InsufficientStock { .. }) => Outcome::Refused,
            Err(DeductError::Conflict { attempts }) => Outcome::Error {
                kind: "conflict",
                attempts,
            },
            Err(error) => Outcome::Error {
                kind: error.kind(),
                attempts: 1,
            },
        }
    }
}

/// Raw SQL on a bare pool.
#[derive(Debug)]
pub struct RawDeductor {
    pool: RawPool,
    skus: Arc<Vec<String>>,
    op: RawOp,
}

impl Deductor for RawDeductor {
    async fn deduct(&self, sku_index: usize, units: u32) -> Outcome {
        self.pool
            .raw_deduct(self.op, &self.skus[sku_index], i64::from(units))
            .await
    }
}

/// How long a drive lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Requesters stop starting new requests after this long.
    pub duration: Duration,
    /// And after this many requests each, if set.
    pub ops_per_requester: Option<u64>,
}

/// What one drive observed.
#[derive(Debug)]
pub struct Drive {
    /// The merged tally.
    pub tally: Tally,
    /// Wall time until the last requester finished.
    pub elapsed: Duration,
}

/// Runs `requesters` concurrent requesters, each issuing its own seeded request stream
/// back to back, until the bounds are reached.
pub async fn drive<D: Deductor>(
    deductor: Arc<D>,
    level: LevelSpec,
    quantity: QuantityDist,
    seed: u64,
    requesters: usize,
    bounds: Bounds,
) -> anyhow::Result<Drive> {
    let started = Instant::now();
    let deadline = started + bounds.duration;
    let mut tasks = Vec::with_capacity(requesters);
    for index in 0..requesters {
        let deductor = Arc::clone(&deductor);
        tasks.push(tokio::spawn(async move {
            let mut stream = RequestStream::new(&level, quantity, seed, index);
            let mut tally = Tally::default();
            let mut issued = 0u64;
            while Instant::now() < deadline && bounds.ops_per_requester.is_none_or(|max| issued < max) {
                let request = stream.next_request();
                let sent = Instant::now();
                let outcome = deductor.deduct(request.sku_index, request.units).await;
                let done = Instant::now();
                tally.record(
                    request.sku_index,
                    request.units,
                    outcome,
                    done - sent,
                    done - started,
                );
                issued += 1;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a requester panicked")?);
    }
    Ok(Drive {
        tally,
        elapsed: started.elapsed(),
    })
}

/// How each SKU's initial stock is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StockSizing {
    /// From the warm-up's measured rate: each SKU gets `fill ×` its expected demand over the
    /// measured run (at least 1 unit), so SKUs sell out near the end of the run and the
    /// sell-out must be exact.
    Auto {
        /// Fraction of the expected demand to stock (e.g. 0.9).
        fill: f64,
    },
    /// The same fixed stock for every SKU.
    Fixed {
        /// Units per SKU.
        units: i64,
    },
}

/// Everything one case needs.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSpec {
    /// Database.
    pub backend: Backend,
    /// Deduction path.
    pub variant: Variant,
    /// How requests reach it.
    pub transport: Transport,
    /// Conflict level (SKU count and skew).
    pub level: LevelSpec,
    /// Concurrent requesters.
    pub requesters: usize,
    /// Connections in the pool (library and raw alike).
    pub pool_size: u32,
    /// Warm-up length; also measures the rate that sizes the stock.
    pub warmup: Duration,
    /// Measured run bounds.
    pub bounds: Bounds,
    /// Quantities.
    pub quantity: QuantityDist,
    /// Stock sizing.
    pub stock: StockSizing,
    /// The run's seed.
    pub seed: u64,
}

impl CaseSpec {
    /// `strategy` in-process, `strategy over http` otherwise: the name in logs and messages.
    pub fn path_name(&self) -> String {
        match self.transport {
            Transport::InProcess => self.variant.name(),
            Transport::Http => format!("{} over http", self.variant),
        }
    }
}

/// Measured figures and audit of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// What ran.
    pub spec: CaseSpec,
    /// Name of the (dropped) database it ran in.
    pub database: String,
    /// Successful deductions.
    pub successes: u64,
    /// Refusals for insufficient stock.
    pub refused: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Successful deductions per second, over the selling window.
    pub successes_per_s: f64,
    /// Refusals per second, over the whole run.
    pub refused_per_s: f64,
    /// Time from start to the last success, in seconds (the selling window).
    pub selling_window_s: f64,
    /// Wall time of the measured run, in seconds.
    pub elapsed_s: f64,
    /// Mean attempts per successful deduction.
    pub attempts_per_success: f64,
    /// Measured conflict rate (see docs/benchmarks.md).
    pub conflict_rate: f64,
    /// Fraction of attempts that failed (version miss, deadlock) and were retried.
    pub failed_attempt_rate: f64,
    /// Successes that waited ≥ 1 ms for the row, as a fraction of successes.
    pub waited_fraction: f64,
    /// Success latency percentiles, in microseconds.
    pub latency_us_p50: u64,
    /// p95.
    pub latency_us_p95: u64,
    /// p99.
    pub latency_us_p99: u64,
    /// max.
    pub latency_us_max: u64,
    /// Units per second the warm-up reached (sizes the stock).
    pub warmup_units_per_s: f64,
    /// Σ initial stock over all SKUs.
    pub total_initial_stock: i64,
    /// Coalesced batches and their mean size, when the strategy is `Coalesced`.
    pub coalesced_batches: Option<u64>,
    /// Mean batch size.
    pub coalesced_mean_batch: Option<f64>,
    /// The audit.
    pub audit: AuditOutcome,
}

/// Warm-up SKUs hold this much, so the warm-up never sells out.
const WARMUP_STOCK: i64 = 1_000_000_000_000;

/// Runs one case in a fresh database and drops the database afterwards, whatever happens.
pub async fn run_case(spec: CaseSpec) -> anyhow::Result<CaseResult> {
    let database = FreshDatabase::create(spec.backend)
        .await
        .with_context(|| format!("creating a fresh {} database", spec.backend))?;
    let result = run_in(&spec, &database).await;
    let name = database.name().to_owned();
    database
        .drop_now()
        .await
        .with_context(|| format!("dropping bench database {name}"))?;
    result
}

async fn run_in(spec: &CaseSpec, database: &FreshDatabase) -> anyhow::Result<CaseResult> {
    let url = database.url().to_owned();
    let sku_names: Vec<String> = (0..spec.level.sku_count).map(sku_name).collect();
    if !spec.transport.carries(spec.variant) {
        bail!(
            "{} bypasses the library, so it cannot run over {}",
            spec.variant,
            spec.transport
        );
    }
    if spec.transport == Transport::Http {
        return crate::http::run_over_http(spec, database, sku_names).await;
    }
    match spec.backend {
        Backend::Postgres => {
            let store = stockguard_postgres::PgStore::connect(pg_config(&url, spec.pool_size)).await?;
            store.migrate().await?;
            run_with_store(spec, database, store, sku_names).await
        }
        #[cfg(feature = "mysql")]
        Backend::Mariadb => {
            let store = stockguard_mysql::MySqlStore::connect(mysql_config(&url, spec.pool_size)).await?;
            store.migrate().await?;
            run_with_store(spec, database, store, sku_names).await
        }
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => {
            let store = stockguard_sqlite::SqliteStore::connect(sqlite_config(&url, spec.pool_size)).await?;
            store.migrate().await?;
            run_with_store(spec, database, store, sku_names).await
        }
        #[allow(unreachable_patterns)]
        other => anyhow::bail!("this build has no {other} adapter (enable the `{other}` feature)"),
    }
}

// The store configurations of a case, shared by both transports so the service is measured
// over exactly the store the in-process path gets: the adapter's defaults and the case's pool.

/// PostgreSQL store configuration for a case.
pub(crate) fn pg_config(url: &str, pool_size: u32) -> stockguard_postgres::PgConfig {
    let mut config = stockguard_postgres::PgConfig::new(url.to_owned());
    config.max_connections = pool_size;
    config
}

/// MariaDB store configuration for a case.
#[cfg(feature = "mysql")]
pub(crate) fn mysql_config(url: &str, pool_size: u32) -> stockguard_mysql::MySqlConfig {
    let mut config = stockguard_mysql::MySqlConfig::new(url.to_owned());
    config.max_connections = pool_size;
    config
}

/// SQLite store configuration for a case.
#[cfg(feature = "sqlite")]
pub(crate) fn sqlite_config(path: &str, pool_size: u32) -> stockguard_sqlite::SqliteConfig {
    let mut config = stockguard_sqlite::SqliteConfig::new(path.to_owned());
    config.max_connections = pool_size;
    config
}

/// Batches the coalescer committed so far, when the store exposes it.
pub trait CoalescerCounters {
    /// (batches, requests carried).
    fn coalescer_counters(&self) -> (u64, u64);
}

macro_rules! coalescer_counters {
    ($store:ty) => {
        impl CoalescerCounters for $store {
            fn coalescer_counters(&self) -> (u64, u64) {
                use std::sync::atomic::Ordering;
                let stats = self.coalescer().stats();
                (
                    stats.batches.load(Ordering::Relaxed),
                    stats.batched_requests.load(Ordering::Relaxed),
                )
            }
        }
    };
}
coalescer_counters!(stockguard_postgres::PgStore);
#[cfg(feature = "mysql")]
coalescer_counters!(stockguard_mysql::MySqlStore);
#[cfg(feature = "sqlite")]
coalescer_counters!(stockguard_sqlite::SqliteStore);

async fn run_with_store<S: InventoryStore + CoalescerCounters>(
    spec: &CaseSpec,
    database: &FreshDatabase,
    store: S,
    sku_names: Vec<String>,
) -> anyhow::Result<CaseResult> {
    // A small admin pool for setup and the audit, separate from the pool under test.
    let admin = RawPool::connect(spec.backend, database.url(), 2).await?;
    let outcome = match spec.variant {
        Variant::Library(strategy) => {
            let skus: Vec<SkuId> = sku_names
                .iter()
                .map(|s| SkuId::parse(s.clone()))
                .collect::<Result<_, _>>()?;
            let store = Arc::new(store);
            let deductor = Arc::new(LibraryDeductor {
                store: Arc::clone(&store),
                skus: Arc::new(skus),
                strategy,
            });
            let counters = || store.coalescer_counters();
            let result = measure(spec, &admin, deductor, &sku_names, counters).await;
            store.close().await;
            result.map(|mut r| {
                if strategy != Strategy::Coalesced {
                    r.coalesced_batches = None;
                    r.coalesced_mean_batch = None;
                }
                r
            })
        }
        Variant::Raw(op) => {
            // The library only created the schema; the raw paths get their own bare pool.
            store.close().await;
            let pool = RawPool::connect(spec.backend, database.url(), spec.pool_size).await?;
            let deductor = Arc::new(RawDeductor {
                pool: pool.clone(),
                skus: Arc::new(sku_names.clone()),
                op,
            });
            let result = measure(spec, &admin, deductor, &sku_names, || (0, 0)).await;
            pool.close().await;
            result
        }
    };
    admin.close().await;
    let mut result = outcome?;
    result.database = database.name().to_owned();
    Ok(result)
}

/// Warm-up, stock sizing, measured run and audit of one case, whatever the deductor.
pub(crate) async fn measure<D: Deductor>(
    spec: &CaseSpec,
    admin: &RawPool,
    deductor: Arc<D>,
    sku_names: &[String],
    coalescer_counters: impl Fn() -> (u64, u64),
) -> anyhow::Result<CaseResult> {
    // Warm-up: plenty of stock, same workload (a different seed stream so the measured
    // sequence is the one the seed names).
    admin
        .reset_inventory(sku_names, &vec![WARMUP_STOCK; sku_names.len()])
        .await
        .context("creating the SKUs")?;
    let warmup = drive(
        Arc::clone(&deductor),
        spec.level,
        spec.quantity,
        spec.seed ^ 0x5741_524D_5550,
        spec.requesters,
        Bounds {
            duration: spec.warmup,
            ops_per_requester: None,
        },
    )
    .await?;
    let warm_units: i64 = warmup.tally.per_sku.values().map(|s| s.units_deducted).sum();
    let warmup_units_per_s = warm_units as f64 / warmup.elapsed.as_secs_f64().max(1e-3);
    let stocks: Vec<i64> = match spec.stock {
        StockSizing::Fixed { units } => vec![units; sku_names.len()],
        StockSizing::Auto { fill } => {
            let expected_units = warmup_units_per_s * spec.bounds.duration.as_secs_f64() * fill;
            spec.level
                .access_probabilities()
                .into_iter()
                .map(|p| {
                    // Rounded, at least 1, and far below STOCK_MAX.
                    #[allow(clippy::cast_possible_truncation)]
                    let units = (expected_units * p).round().clamp(1.0, 1e12) as i64;
                    units
                })
                .collect()
        }
    };
    admin
        .reset_inventory(sku_names, &stocks)
        .await
        .context("resetting stock for the measured run")?;
    let (batches_before, batched_before) = coalescer_counters();
    let measured = drive(
        deductor,
        spec.level,
        spec.quantity,
        spec.seed,
        spec.requesters,
        spec.bounds,
    )
    .await?;
    let (batches_after, batched_after) = coalescer_counters();
    let batches = batches_after - batches_before;
    let rows = admin.audit_rows().await.context("reading the audit figures")?;
    let audit = audit(&rows, sku_names, &stocks, &measured.tally);
    let tally = &measured.tally;
    let window = if tally.successes == 0 {
        measured.elapsed
    } else {
        tally.last_success_at
    };
    let hist = &tally.success_latency_us;
    let percentile = |q: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(q)
        }
    };
    Ok(CaseResult {
        spec: spec.clone(),
        database: String::new(),
        successes: tally.successes,
        refused: tally.refused,
        errors: tally.errors.clone(),
        successes_per_s: tally.successes as f64 / window.as_secs_f64().max(1e-3),
        refused_per_s: tally.refused as f64 / measured.elapsed.as_secs_f64().max(1e-3),
        selling_window_s: window.as_secs_f64(),
        elapsed_s: measured.elapsed.as_secs_f64(),
        attempts_per_success: tally.attempts_per_success(),
        conflict_rate: tally.conflict_rate(),
        failed_attempt_rate: tally.failed_attempt_rate(),
        waited_fraction: if tally.successes == 0 {
            0.0
        } else {
            tally.waited_successes as f64 / tally.successes as f64
        },
        latency_us_p50: percentile(0.50),
        latency_us_p95: percentile(0.95),
        latency_us_p99: percentile(0.99),
        latency_us_max: if hist.is_empty() { 0 } else { hist.max() },
        warmup_units_per_s,
        total_initial_stock: stocks.iter().sum(),
        coalesced_batches: Some(batches),
        coalesced_mean_batch: Some(if batches == 0 {
            0.0
        } else {
            (batched_after - batched_before) as f64 / batches as f64
        }),
        audit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_http_carries_only_the_library() {
        for (raw, transport) in [
            ("in-process", Transport::InProcess),
            ("in_process", Transport::InProcess),
            ("http", Transport::Http),
        ] {
            assert_eq!(raw.parse::<Transport>().unwrap(), transport);
        }
        assert!("https".parse::<Transport>().is_err());
        assert_eq!(
            serde_json::to_string(&Transport::InProcess).unwrap(),
            "\"in_process\""
        );
        for variant in Variant::all() {
            assert!(Transport::InProcess.carries(variant));
            assert_eq!(
                Transport::Http.carries(variant),
                matches!(variant, Variant::Library(_)),
                "{variant}"
            );
        }
    }
}
