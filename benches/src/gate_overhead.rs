//! The gate's cost where it saves nothing: 100,000 SKUs with far more stock than the run can
//! take, `guarded`, in the same run: without the gate, with the gate over every SKU, and with
//! the gate scoped to hot SKUs only (`flash-*`, which none of these SKUs is), the setting
//! docs/redis.md recommends. The gate's counters are primed first (`Gate::prime`), as in a
//! deployment that has been running: the figure is the steady state, not 100,000 warm-ups.
//! After each case: one ledger row per sale and the audit; the scoped case also checks that
//! no sale made a Redis call.

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
    DeductError, DeductRequest, IdempotencyKey, InventoryStore, Quantity, SkuId, Strategy,
};
use stockguard_redis_gate::{GateScope, GateStats, GatedStore};
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::measure::open_store;
use crate::tally::LATENCY_MAX_US;
use crate::workload::sku_name;

/// SKUs the requests spread over.
pub const OVERHEAD_SKUS: usize = 100_000;
/// Units every SKU starts with: far above what a case can take.
const STOCK_PER_SKU: i64 = 1_000_000_000;
/// The hot-only case's scope: a prefix none of the case's SKUs has.
const HOT_ONLY_SCOPE: &str = "flash-*";

/// Whether and how the gate is in front.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverheadGate {
    /// No gate.
    Off,
    /// The gate over every SKU (the default scope).
    Every,
    /// The gate scoped to hot SKUs, none of which the case touches.
    HotOnly,
}

impl OverheadGate {
    /// The path's name in the progress log.
    pub fn name(self) -> &'static str {
        match self {
            OverheadGate::Off => "guarded",
            OverheadGate::Every => "gate_guarded",
            OverheadGate::HotOnly => "gate_hot_only_guarded",
        }
    }
}

/// One low-conflict case.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadSpec {
    /// The database.
    pub backend: Backend,
    /// Whether and how the gate is in front.
    pub gate: OverheadGate,
    /// Concurrent requesters.
    pub requesters: usize,
    /// Pooled connections.
    pub pool_size: u32,
    /// Measured run length.
    pub duration: Duration,
    /// Seed of the SKU choices.
    pub seed: u64,
    /// The gate's Redis.
    #[serde(skip)]
    pub redis_url: String,
}

impl OverheadSpec {
    /// How the case is named in the progress log.
    pub fn label(&self) -> String {
        format!(
            "{} low-conflict {} x{}",
            self.backend,
            self.gate.name(),
            self.requesters
        )
        .to_lowercase()
    }
}

/// What one low-conflict case measured.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadResult {
    /// What ran.
    pub spec: OverheadSpec,
    /// Deductions per second.
    pub per_s: f64,
    /// Latency of a deduction, microseconds.
    pub p50_us: u64,
    /// The 99th percentile of the same.
    pub p99_us: u64,
    /// Answers other than a sale, by kind (none expected).
    pub errors: BTreeMap<&'static str, u64>,
    /// What the checks found wrong; empty when the case passed.
    pub problems: Vec<String>,
}

/// Plain, gated, then gated for hot SKUs only, per database.
pub fn overhead_specs(
    databases: &[Backend],
    requesters: usize,
    pool_size: u32,
    duration: Duration,
    seed: u64,
    redis_url: &str,
) -> Vec<OverheadSpec> {
    let mut specs = Vec::new();
    for backend in databases {
        for gate in [OverheadGate::Off, OverheadGate::Every, OverheadGate::HotOnly] {
            specs.push(OverheadSpec {
                backend: *backend,
                gate,
                requesters,
                pool_size: if *backend == Backend::Sqlite {
                    pool_size.min(crate::db::SQLITE_POOL_MAX)
                } else {
                    pool_size
                },
                duration,
                seed,
                redis_url: redis_url.to_owned(),
            });
        }
    }
    specs
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
pub async fn run_overhead(spec: OverheadSpec) -> anyhow::Result<OverheadResult> {
    in_fresh_database(spec.backend, async |database| run_in(&spec, database).await).await
}

async fn run_in(spec: &OverheadSpec, database: &FreshDatabase) -> anyhow::Result<OverheadResult> {
    let mut settings = StoreSettings::new(database.target()?);
    settings.pool_size = spec.pool_size;
    settings.acquire_timeout = Duration::from_secs(10);
    let store = open_store(settings).await?;
    let names: Vec<String> = (0..OVERHEAD_SKUS).map(sku_name).collect();
    let admin = RawPool::connect(database, 2).await?;
    admin
        .reset_inventory(&names, &vec![STOCK_PER_SKU; names.len()])
        .await?;
    admin.close().await;
    let skus: Arc<Vec<SkuId>> = Arc::new(
        names
            .iter()
            .map(|n| SkuId::parse(n.as_str()))
            .collect::<Result<_, _>>()?,
    );

    let (target, gate) = if spec.gate != OverheadGate::Off {
        let scope = match spec.gate {
            OverheadGate::HotOnly => GateScope::parse(HOT_ONLY_SCOPE)?,
            _ => GateScope::Every,
        };
        let gate = crate::flash::connect_gate(&spec.redis_url, scope).await?;
        let primed: Vec<(SkuId, i64)> = skus.iter().map(|sku| (sku.clone(), STOCK_PER_SKU)).collect();
        gate.prime(&primed).await.context("priming the counters")?;
        (
            Target::Gated(Arc::new(GatedStore::new(store.clone(), Arc::clone(&gate)))),
            Some(gate),
        )
    } else {
        (Target::Plain(Arc::new(store.clone())), None)
    };
    let started = Instant::now();
    let deadline = started + spec.duration;
    let tasks: Vec<_> = (0..spec.requesters)
        .map(|index| {
            let (target, skus, seed) = (target.clone(), Arc::clone(&skus), spec.seed);
            tokio::spawn(async move { requester(&target, &skus, seed, index, deadline).await })
        })
        .collect();
    let mut ok = 0u64;
    let mut errors: BTreeMap<&'static str, u64> = BTreeMap::new();
    let mut latency_us = Histogram::<u64>::new_with_bounds(1, LATENCY_MAX_US, 3)?;
    for task in tasks {
        let (sold, failed, latency) = task.await.context("a requester panicked")?;
        ok += sold;
        for (kind, count) in failed {
            *errors.entry(kind).or_default() += count;
        }
        latency_us.add(&latency)?;
    }
    let elapsed = started.elapsed();

    let mut problems = Vec::new();
    let ledger_rows: i64 = store.snapshot().await?.iter().map(|s| s.ledger_rows).sum();
    if ledger_rows != i64::try_from(ok)? {
        problems.push(format!("{ledger_rows} ledger rows for {ok} sales"));
    }
    let audit = store.audit().await?;
    if !audit.is_clean() {
        problems.push(format!("the library's audit is not clean: {audit:?}"));
    }
    if let Some(gate) = gate {
        let ungated = GateStats::get(&gate.stats().ungated);
        if spec.gate == OverheadGate::HotOnly
            && (ungated != ok || GateStats::get(&gate.stats().admitted) != 0)
        {
            problems.push(format!(
                "{ungated} of {ok} sales skipped Redis with every SKU out of scope"
            ));
        }
        gate.forget_all().await.context("dropping the gate's keys")?;
    }
    store.close().await;
    Ok(OverheadResult {
        spec: spec.clone(),
        per_s: ok as f64 / elapsed.as_secs_f64(),
        p50_us: latency_us.value_at_quantile(0.50),
        p99_us: latency_us.value_at_quantile(0.99),
        errors,
        problems,
    })
}

/// The store the requests go through.
#[derive(Clone)]
enum Target {
    Plain(Arc<AnyStore>),
    Gated(Arc<GatedStore<AnyStore>>),
}

/// Keyed one-unit `guarded` deductions on random SKUs, back to back until `deadline`.
async fn requester(
    target: &Target,
    skus: &[SkuId],
    seed: u64,
    index: usize,
    deadline: Instant,
) -> (u64, BTreeMap<&'static str, u64>, Histogram<u64>) {
    let mut rng = StdRng::seed_from_u64(seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let one = Quantity::new(1).expect("1 is a valid quantity");
    let (mut ok, mut errors) = (0u64, BTreeMap::new());
    let mut latency = Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds");
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let sku = skus[rng.random_range(0..skus.len())].clone();
        let key = IdempotencyKey::parse(format!("ov-{index}-{n}")).expect("valid key");
        let request = DeductRequest::new(sku, one, Strategy::Guarded).with_idempotency_key(key);
        let sent = Instant::now();
        let answer: Result<(), DeductError> = match target {
            Target::Plain(store) => store.deduct(request).await.map(|_| ()),
            Target::Gated(store) => store.deduct(request).await.map(|_| ()),
        };
        match answer {
            Ok(()) => ok += 1,
            Err(error) => *errors.entry(error.kind()).or_default() += 1,
        }
        let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        latency.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }
    (ok, errors, latency)
}
