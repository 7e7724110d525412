//! The checkout workload: 3-line orders and holds through the real library, in-process, on
//! a fresh database per case, with the library's audit and a count of ledger rows after
//! every case.
//!
//! Every request has three lines of one unit each:
//! - `hot`: one hot SKU (every request touches it) plus two cold SKUs drawn from 100,000;
//! - `spread`: three distinct SKUs drawn from 100,000.
//!
//! Operations:
//! - `order`: place it (`POST /v1/orders`);
//! - `hold`: place a hold with the same lines (`POST /v1/holds`, TTL 10 minutes);
//! - `checkout`: a hold, then, for 90 % of them, a confirm of every unit; the other 10 % are
//!   abandoned with a TTL of 1 s and must expire (after the run the harness waits past their
//!   expiry and sweeps until none is left; every abandoned hold must have been expired).
//!
//! Stock is far above demand, so every request can succeed: the figures are throughput and
//! latency, not sell-out. After the run, the ledger must hold exactly the rows the successes
//! wrote (3 per order or hold; 6 per checkout, which is 3 `reserve` plus 3 `confirm` or
//! `expire`), and the audit (stock, ledger, orders, holds, `reserved`) must be clean.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use stockguard_api::AnyStore;
use stockguard_api::store::StoreSettings;
use stockguard_core::{
    ConfirmLines, DeductError, HoldId, HoldRequest, InventoryStore, OrderId, OrderLine, OrderRequest,
    OrderStrategy, Quantity, SkuId,
};
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::measure::open_store;
use crate::report::Results;
use crate::tally::{LATENCY_MAX_US, is_fatal_error_kind};
use crate::workload::sku_name;

/// Cold SKUs (the hot SKU is one more, index 0).
pub const COLD_SKUS: usize = 100_000;
/// Units every SKU starts with: far above what any case can take.
const STOCK_PER_SKU: i64 = 1_000_000_000;
/// Share of checkouts abandoned (left to expire).
const ABANDON_SHARE: f64 = 0.1;
/// TTL of an abandoned checkout's hold, and of every other hold.
const ABANDONED_TTL_S: u32 = 1;
const HOLD_TTL_S: u32 = 600;
/// Holds per sweep transaction after the run, and most sweeps (a bound on the loop).
const SWEEP_BATCH: u32 = 1_000;
const SWEEPS_MAX: usize = 10_000;
/// How long a library call waits for a pooled connection (as the deduction cases).
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Which SKUs a request's three lines go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutLevel {
    /// One hot SKU in every request, plus two cold ones.
    Hot,
    /// Three cold SKUs out of 100,000.
    Spread,
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutOp {
    /// Place an order.
    Order,
    /// Place a hold.
    Hold,
    /// Place a hold, then confirm it (or abandon it to expire).
    Checkout,
}

/// One checkout case.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutSpec {
    /// The database.
    pub backend: Backend,
    /// Where the lines go.
    pub level: CheckoutLevel,
    /// What each request does.
    pub op: CheckoutOp,
    /// How orders and holds take their units (`locked` or `guarded`).
    #[serde(serialize_with = "strategy_name")]
    pub strategy: OrderStrategy,
    /// Concurrent requesters.
    pub requesters: usize,
    /// Pooled connections.
    pub pool_size: u32,
    /// Measured run length.
    pub duration: Duration,
    /// Seed of every requester's line choices.
    pub seed: u64,
}

impl CheckoutSpec {
    /// How the case is named in the progress log and in failures.
    pub fn label(&self) -> String {
        format!(
            "{} checkout {:?} {:?} {} x{}",
            self.backend,
            self.level,
            self.op,
            self.strategy.as_str(),
            self.requesters
        )
        .to_lowercase()
    }
}

fn strategy_name<S: serde::Serializer>(strategy: &OrderStrategy, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(strategy.as_str())
}

/// What one checkout case measured and found.
#[derive(Debug, Clone, Serialize)]
pub struct CheckoutResult {
    /// What ran.
    pub spec: CheckoutSpec,
    /// Requests that succeeded (a checkout counts once, confirmed or abandoned).
    pub completed: u64,
    /// Of those, checkouts abandoned to expire.
    pub abandoned: u64,
    /// Holds the sweep expired after the run (must equal `abandoned`).
    pub expired: u64,
    /// Requests refused for want of stock (none expected).
    pub refused: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Successes per second over the run.
    pub per_s: f64,
    /// Latency of a success (a whole checkout: hold and confirm), microseconds.
    pub p50_us: u64,
    /// The 99th percentile of the same.
    pub p99_us: u64,
    /// Ledger rows after the run, and the rows the successes must have written.
    pub ledger_rows: i64,
    /// 3 per order or hold, 6 per checkout.
    pub expected_ledger_rows: i64,
    /// What the checks found wrong; empty when the case passed.
    pub problems: Vec<String>,
}

impl CheckoutResult {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// One progress line.
    pub fn summary(&self) -> String {
        format!(
            "{:>9.0} ok/s  p99 {:>8.2} ms  errors {}  check {}",
            self.per_s,
            self.p99_us as f64 / 1000.0,
            self.errors.values().sum::<u64>(),
            if self.passed() { "pass" } else { "FAIL" }
        )
    }

    /// What fails the run: a failed check, or an error of a kind that means the harness can
    /// no longer vouch for its count (see [`is_fatal_error_kind`]).
    pub fn failure(&self) -> Option<String> {
        let fatal = self.errors.keys().any(|kind| is_fatal_error_kind(kind));
        (!self.passed() || fatal).then(|| {
            format!(
                "{}: {}; errors {:?}",
                self.spec.label(),
                self.problems.join("; "),
                self.errors
            )
        })
    }
}

/// The checkout cases for `databases`: both levels, each operation, both strategies (the
/// full checkout with the default, `guarded`).
pub fn checkout_specs(
    databases: &[Backend],
    requesters: usize,
    pool_size: u32,
    duration: Duration,
    seed: u64,
) -> Vec<CheckoutSpec> {
    let mut specs = Vec::new();
    for backend in databases {
        for level in [CheckoutLevel::Hot, CheckoutLevel::Spread] {
            let ops = [
                (CheckoutOp::Order, OrderStrategy::Locked),
                (CheckoutOp::Order, OrderStrategy::Guarded),
                (CheckoutOp::Order, OrderStrategy::Coalesced),
                (CheckoutOp::Hold, OrderStrategy::Locked),
                (CheckoutOp::Hold, OrderStrategy::Guarded),
                (CheckoutOp::Checkout, OrderStrategy::Guarded),
            ];
            for (op, strategy) in ops {
                specs.push(CheckoutSpec {
                    backend: *backend,
                    level,
                    op,
                    strategy,
                    requesters,
                    pool_size: if *backend == Backend::Sqlite {
                        pool_size.min(crate::db::SQLITE_POOL_MAX)
                    } else {
                        pool_size
                    },
                    duration,
                    seed,
                });
            }
        }
    }
    specs
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
/// Runs every checkout case; a case that fails to run is recorded, and the section goes on.
pub async fn run_checkout_cases(specs: Vec<CheckoutSpec>, log: &impl Fn(String), results: &mut Results) {
    for spec in specs {
        let label = spec.label();
        match run_checkout(spec).await {
            Ok(case) => {
                log(format!("{label:<52} {}", case.summary()));
                results.checkout.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
}

pub async fn run_checkout(spec: CheckoutSpec) -> anyhow::Result<CheckoutResult> {
    in_fresh_database(spec.backend, async |database| run_in(&spec, database).await).await
}

async fn run_in(spec: &CheckoutSpec, database: &FreshDatabase) -> anyhow::Result<CheckoutResult> {
    let mut settings = StoreSettings::new(database.target()?);
    settings.pool_size = spec.pool_size;
    settings.acquire_timeout = ACQUIRE_TIMEOUT;
    let store = Arc::new(open_store(settings).await?);
    let names: Vec<String> = (0..=COLD_SKUS).map(sku_name).collect();
    let admin = RawPool::connect(database, 2).await?;
    admin
        .reset_inventory(&names, &vec![STOCK_PER_SKU; names.len()])
        .await
        .context("creating the SKUs")?;
    admin.close().await;
    let skus: Arc<Vec<SkuId>> = Arc::new(
        names
            .iter()
            .map(|name| SkuId::parse(name.as_str()))
            .collect::<Result<_, _>>()?,
    );

    let started = Instant::now();
    let deadline = started + spec.duration;
    let mut tasks = Vec::with_capacity(spec.requesters);
    for index in 0..spec.requesters {
        let (store, skus, spec) = (Arc::clone(&store), Arc::clone(&skus), spec.clone());
        tasks.push(tokio::spawn(async move {
            requester(&store, &skus, &spec, index, deadline).await
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a requester panicked")?);
    }
    let elapsed = started.elapsed();

    let mut problems = Vec::new();
    let expired = if spec.op == CheckoutOp::Checkout {
        tokio::time::sleep(Duration::from_secs(u64::from(ABANDONED_TTL_S)) + Duration::from_millis(300))
            .await;
        let mut expired = 0;
        for _ in 0..SWEEPS_MAX {
            let swept = store.sweep_holds(SWEEP_BATCH).await?;
            expired += swept as u64;
            if swept == 0 {
                break;
            }
        }
        if expired != tally.abandoned {
            problems.push(format!(
                "{} holds abandoned, {expired} expired by the sweep",
                tally.abandoned
            ));
        }
        expired
    } else {
        0
    };
    let rows_per_success = if spec.op == CheckoutOp::Checkout { 6 } else { 3 };
    let expected_ledger_rows = i64::try_from(tally.completed)? * rows_per_success;
    let snapshot = store.snapshot().await?;
    let ledger_rows: i64 = snapshot.iter().map(|s| s.ledger_rows).sum();
    if ledger_rows != expected_ledger_rows {
        problems.push(format!(
            "{ledger_rows} ledger rows, but the successes wrote {expected_ledger_rows}"
        ));
    }
    let audit = store.audit().await?;
    if !audit.is_clean() {
        problems.push(format!("the library's audit is not clean: {audit:?}"));
    }
    if spec.level == CheckoutLevel::Hot {
        let hot = store.stock(&skus[0]).await?;
        let held = if spec.op == CheckoutOp::Hold {
            i64::try_from(tally.completed)?
        } else {
            0
        };
        if hot.reserved != held {
            problems.push(format!("the hot SKU reserves {} units, not {held}", hot.reserved));
        }
    }
    store.close().await;
    let (p50_us, p99_us) = tally.percentiles();
    Ok(CheckoutResult {
        spec: spec.clone(),
        completed: tally.completed,
        abandoned: tally.abandoned,
        expired,
        refused: tally.refused,
        errors: tally.errors,
        per_s: tally.completed as f64 / elapsed.as_secs_f64(),
        p50_us,
        p99_us,
        ledger_rows,
        expected_ledger_rows,
        problems,
    })
}

/// What one requester saw.
#[derive(Debug)]
struct Tally {
    completed: u64,
    abandoned: u64,
    refused: u64,
    errors: BTreeMap<&'static str, u64>,
    latency_us: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            completed: 0,
            abandoned: 0,
            refused: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
        }
    }
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.completed += other.completed;
        self.abandoned += other.abandoned;
        self.refused += other.refused;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds");
    }

    fn record(&mut self, result: Result<(), DeductError>, latency: Duration) {
        match result {
            Ok(()) => {
                self.completed += 1;
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_us.saturating_record(us.clamp(1, LATENCY_MAX_US));
            }
            Err(DeductError::OrderShort { .. } | DeductError::InsufficientStock { .. }) => self.refused += 1,
            Err(error) => *self.errors.entry(error.kind()).or_default() += 1,
        }
    }

    fn percentiles(&self) -> (u64, u64) {
        (
            self.latency_us.value_at_quantile(0.50),
            self.latency_us.value_at_quantile(0.99),
        )
    }
}

/// Sends requests back to back until `deadline`.
async fn requester(
    store: &AnyStore,
    skus: &[SkuId],
    spec: &CheckoutSpec,
    index: usize,
    deadline: Instant,
) -> Tally {
    let mut rng = StdRng::seed_from_u64(spec.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut tally = Tally::default();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let lines = draw_lines(&mut rng, skus, spec.level);
        let id = format!("ck-{index}-{n}");
        let sent = Instant::now();
        let result = match spec.op {
            CheckoutOp::Order => {
                let order = OrderRequest::new(OrderId::parse(id).expect("valid id"), lines, spec.strategy)
                    .expect("three valid lines");
                store.place_order(order).await.map(|_| ())
            }
            CheckoutOp::Hold => place_hold(store, &id, lines, HOLD_TTL_S, spec.strategy).await,
            CheckoutOp::Checkout => {
                let abandon = rng.random_bool(ABANDON_SHARE);
                let ttl_s = if abandon { ABANDONED_TTL_S } else { HOLD_TTL_S };
                let placed = place_hold(store, &id, lines, ttl_s, spec.strategy).await;
                match placed {
                    Ok(()) if abandon => {
                        tally.abandoned += 1;
                        Ok(())
                    }
                    Ok(()) => {
                        let hold_id = HoldId::parse(id).expect("valid id");
                        store.confirm_hold(&hold_id, ConfirmLines::All).await.map(|_| ())
                    }
                    Err(error) => Err(error),
                }
            }
        };
        tally.record(result, sent.elapsed());
    }
    tally
}

async fn place_hold(
    store: &AnyStore,
    id: &str,
    lines: Vec<OrderLine>,
    ttl_s: u32,
    strategy: OrderStrategy,
) -> Result<(), DeductError> {
    let hold = HoldRequest::new(HoldId::parse(id).expect("valid id"), lines, ttl_s, strategy)
        .expect("three valid lines, a valid TTL");
    store.reserve(hold).await.map(|_| ())
}

/// Three distinct SKUs, one unit each: the hot SKU (index 0) and two cold ones, or three
/// cold ones.
fn draw_lines(rng: &mut StdRng, skus: &[SkuId], level: CheckoutLevel) -> Vec<OrderLine> {
    let mut picked: Vec<usize> = Vec::with_capacity(3);
    if level == CheckoutLevel::Hot {
        picked.push(0);
    }
    while picked.len() < 3 {
        let cold = rng.random_range(1..=COLD_SKUS);
        if !picked.contains(&cold) {
            picked.push(cold);
        }
    }
    let one = Quantity::new(1).expect("1 is a valid quantity");
    picked
        .into_iter()
        .map(|index| OrderLine {
            sku: skus[index].clone(),
            quantity: one,
        })
        .collect()
}
