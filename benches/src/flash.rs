//! The flash-sale workload (docs/redis.md): one SKU with a small supply, many more buy
//! attempts than units, from many concurrent clients, through the real library in-process,
//! each attempt keyed. Per database:
//! - `db_coalesced`: every attempt goes to the database (`coalesced`);
//! - `gate_coalesced`: the Redis admission gate in front, `coalesced` behind it;
//! - `db_pessimistic`: the seed's `SELECT … FOR UPDATE` flow;
//! - `redis_lock`: the seed's layered lock, a per-SKU Redis lock with a fencing token around
//!   an unguarded read-modify-write (flash_lock.rs).
//!
//! After each case: sold = supply exactly, the stock is 0, the ledger holds one row per sale
//! and the audit is clean. The gate case then sends a burst of attempts that are all refused
//! at Redis, and the harness measures a bare Lua check-and-decrement on Redis with the same
//! clients and connection kind: the refusal ceiling the gate is chasing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use hdrhistogram::Histogram;
use serde::Serialize;
use stockguard_api::AnyStore;
use stockguard_api::store::StoreSettings;
use stockguard_core::{
    DeductError, DeductRequest, IdempotencyKey, InventoryStore, Quantity, SkuId, Strategy,
};
use stockguard_redis_gate::{Gate, GateConfig, GateScope, GateStats, GatedStore, RedisTarget};
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::flash_lock::LockedSale;
use crate::measure::open_store;
use crate::tally::LATENCY_MAX_US;

/// How the attempts reach the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashPath {
    /// Every attempt to the database, `coalesced`.
    DbCoalesced,
    /// The Redis gate in front of `coalesced`.
    GateCoalesced,
    /// Every attempt to the database, `pessimistic` (the seed's flow).
    DbPessimistic,
    /// Every attempt takes the SKU's fenced Redis lock, then reads and writes unguarded.
    RedisLock,
}

impl FlashPath {
    /// The path's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FlashPath::DbCoalesced => "db_coalesced",
            FlashPath::GateCoalesced => "gate_coalesced",
            FlashPath::DbPessimistic => "db_pessimistic",
            FlashPath::RedisLock => "redis_lock",
        }
    }
}

/// One flash-sale case.
#[derive(Debug, Clone, Serialize)]
pub struct FlashSpec {
    /// The database.
    pub backend: Backend,
    /// How attempts reach it.
    pub path: FlashPath,
    /// Units on sale.
    pub supply: i64,
    /// Buy attempts (one unit each).
    pub attempts: u64,
    /// Concurrent clients.
    pub clients: usize,
    /// Pooled connections.
    pub pool_size: u32,
    /// Bound on the whole case: attempts not started by then are not sent.
    pub time_cap: Duration,
    /// The gate's Redis (gate cases only).
    #[serde(skip)]
    pub redis_url: String,
}

impl FlashSpec {
    /// How the case is named in the progress log and in failures.
    pub fn label(&self) -> String {
        format!("{} flash {} x{}", self.backend, self.path.name(), self.clients).to_lowercase()
    }
}

/// What one flash-sale case measured and found.
#[derive(Debug, Clone, Serialize)]
pub struct FlashResult {
    /// What ran.
    pub spec: FlashSpec,
    /// Attempts answered with a sale.
    pub sold: u64,
    /// Attempts refused for want of stock.
    pub refused: u64,
    /// Other answers, by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Seconds until every attempt was answered.
    pub answer_all_s: f64,
    /// Attempts answered per second.
    pub answered_per_s: f64,
    /// Latency of every answer, microseconds.
    pub p50_us: u64,
    /// The 99th percentile of the same.
    pub p99_us: u64,
    /// Attempts that reached the database: all of them without the gate; with it, the ones
    /// it admitted or passed.
    pub database_calls: u64,
    /// Gate cases: refusals per second in a burst after sell-out, the gate's sold-out hint
    /// on (most answered without a Redis call).
    pub gate_refusals_per_s: Option<f64>,
    /// The same burst with the hint off: every refusal at Redis.
    pub gate_refusals_without_hint_per_s: Option<f64>,
    /// What the checks found wrong; empty when the case passed.
    pub problems: Vec<String>,
}

impl FlashResult {
    /// True when every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// Why the case fails the run: a failed check, or an answer that is neither a sale nor a
    /// refusal (each attempt must get one or the other).
    pub fn failure(&self) -> Option<String> {
        (!self.passed() || !self.errors.is_empty()).then(|| {
            format!(
                "{}: {}; errors {:?}",
                self.spec.label(),
                self.problems.join("; "),
                self.errors
            )
        })
    }

    /// One progress line.
    pub fn summary(&self) -> String {
        format!(
            "all answered in {:>6.2} s  sold {}  db calls {}  check {}",
            self.answer_all_s,
            self.sold,
            self.database_calls,
            if self.passed() { "pass" } else { "FAIL" }
        )
    }
}

/// The flash-sale cases for `databases`.
pub fn flash_specs(databases: &[Backend], attempts: u64, pool_size: u32, redis_url: &str) -> Vec<FlashSpec> {
    let mut specs = Vec::new();
    for backend in databases {
        for path in [
            FlashPath::DbCoalesced,
            FlashPath::GateCoalesced,
            FlashPath::DbPessimistic,
            FlashPath::RedisLock,
        ] {
            specs.push(FlashSpec {
                backend: *backend,
                path,
                supply: 1_000,
                attempts,
                clients: 256,
                pool_size: if *backend == Backend::Sqlite {
                    pool_size.min(crate::db::SQLITE_POOL_MAX)
                } else {
                    pool_size
                },
                // The layered lock answers one attempt at a time (about 1–2 ms each here):
                // the full profile's 100,000 attempts need minutes.
                time_cap: Duration::from_secs(if path == FlashPath::RedisLock { 600 } else { 120 }),
                redis_url: redis_url.to_owned(),
            });
        }
    }
    specs
}

/// A gate over `scope` in a namespace of its own on `url`.
pub(crate) async fn connect_gate(url: &str, scope: GateScope) -> anyhow::Result<Arc<Gate>> {
    let mut config = GateConfig::new(RedisTarget::parse(url).context("the Redis URL")?);
    config.scope = scope;
    config.namespace = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    config.redis_timeout = Duration::from_secs(2);
    Ok(Arc::new(
        Gate::connect(config).await.context("connecting the gate")?,
    ))
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
pub async fn run_flash(spec: FlashSpec) -> anyhow::Result<FlashResult> {
    in_fresh_database(spec.backend, async |database| run_in(&spec, database).await).await
}

/// The sale's store on `database` with `spec`'s pool, and its one SKU stocked with the supply
/// (written directly: the SKU has no sales, so a gate's done hash for it starts complete).
pub(crate) async fn open_sale(
    spec: &FlashSpec,
    database: &FreshDatabase,
) -> anyhow::Result<(AnyStore, SkuId)> {
    let mut settings = StoreSettings::new(database.target()?);
    settings.pool_size = spec.pool_size;
    settings.acquire_timeout = Duration::from_secs(10);
    let store = open_store(settings).await?;
    let name = "flash-0".to_owned();
    let admin = RawPool::connect(database, 2).await?;
    admin
        .reset_inventory(std::slice::from_ref(&name), &[spec.supply])
        .await?;
    admin.close().await;
    Ok((store, SkuId::parse(name)?))
}

async fn run_in(spec: &FlashSpec, database: &FreshDatabase) -> anyhow::Result<FlashResult> {
    let (store, sku) = open_sale(spec, database).await?;
    let strategy = if spec.path == FlashPath::DbPessimistic {
        Strategy::Pessimistic
    } else {
        Strategy::Coalesced
    };

    let (sale, gate) = if spec.path == FlashPath::GateCoalesced {
        let gate = connect_gate(&spec.redis_url, GateScope::Every).await?;
        let gated = Arc::new(GatedStore::new(store.clone(), Arc::clone(&gate)));
        gate.reconcile(&*gated, &sku)
            .await
            .context("warming the counter")?;
        (Sale::Gated(Arc::clone(&gated)), Some(gate))
    } else if spec.path == FlashPath::RedisLock {
        let pool_size = spec.pool_size;
        let locked = LockedSale::open(database, &spec.redis_url, &sku, pool_size, spec.time_cap).await?;
        (Sale::Locked(Arc::new(locked)), None)
    } else {
        (Sale::Direct(Arc::new(store.clone())), None)
    };
    let tally = attack(&sale, &sku, strategy, spec, "fs").await;
    if let Sale::Locked(locked) = &sale {
        locked.close().await;
    }
    let mut problems = Vec::new();
    if tally.answered() < spec.attempts {
        problems.push(format!(
            "only {} of {} attempts answered within {:?}",
            tally.answered(),
            spec.attempts,
            spec.time_cap
        ));
    }
    let sold = i64::try_from(tally.sold)?;
    if sold != spec.supply {
        problems.push(format!("sold {sold} of a supply of {}", spec.supply));
    }
    let level = store.stock(&sku).await?;
    if level.stock != spec.supply - sold || level.stock < 0 {
        problems.push(format!(
            "stock {} after {sold} sales of {}",
            level.stock, spec.supply
        ));
    }
    let ledger_rows: i64 = store.snapshot().await?.iter().map(|s| s.ledger_rows).sum();
    if ledger_rows != sold {
        problems.push(format!("{ledger_rows} ledger rows for {sold} sales"));
    }
    let audit = store.audit().await?;
    if !audit.is_clean() {
        problems.push(format!("the library's audit is not clean: {audit:?}"));
    }
    let (database_calls, gate_refusals_per_s, gate_refusals_without_hint_per_s) = match &gate {
        Some(gate) => {
            let stats = gate.stats();
            let calls = GateStats::get(&stats.admitted) + GateStats::get(&stats.passed);
            // The refusal bursts (the counter is at 0): with the gate's sold-out hint, as
            // configured, then with a gate on the same keys whose hint is off, so that every
            // refusal is a Redis call.
            let burst = FlashSpec {
                attempts: spec.attempts,
                ..spec.clone()
            };
            let refusals = attack(&sale, &sku, strategy, &burst, "fr").await;
            let mut config = gate.config().clone();
            config.sold_out_hint = Duration::ZERO;
            let unhinted = Arc::new(Gate::connect(config).await?);
            let unhinted = Sale::Gated(Arc::new(GatedStore::new(store.clone(), unhinted)));
            let refusals_without_hint = attack(&unhinted, &sku, strategy, &burst, "fn").await;
            for burst in [&refusals, &refusals_without_hint] {
                if burst.refused != burst.answered() {
                    problems.push(format!("a refusal burst got {:?}", burst.errors));
                }
            }
            gate.forget(&sku).await.context("dropping the gate's keys")?;
            let per_s = |tally: &Tally| tally.refused as f64 / tally.elapsed.as_secs_f64();
            (calls, Some(per_s(&refusals)), Some(per_s(&refusals_without_hint)))
        }
        None => (tally.answered(), None, None),
    };
    store.close().await;
    Ok(FlashResult {
        spec: spec.clone(),
        sold: tally.sold,
        refused: tally.refused,
        answer_all_s: tally.elapsed.as_secs_f64(),
        answered_per_s: tally.answered() as f64 / tally.elapsed.as_secs_f64(),
        p50_us: tally.latency_us.value_at_quantile(0.50),
        p99_us: tally.latency_us.value_at_quantile(0.99),
        errors: tally.errors,
        database_calls,
        gate_refusals_per_s,
        gate_refusals_without_hint_per_s,
        problems,
    })
}

/// The store the attempts go through.
#[derive(Clone)]
pub(crate) enum Sale {
    Direct(Arc<AnyStore>),
    Gated(Arc<GatedStore<AnyStore>>),
    /// The seed's layered lock (one unit per attempt; the key is not written).
    Locked(Arc<LockedSale>),
}

impl Sale {
    async fn deduct(&self, request: DeductRequest) -> Result<(), DeductError> {
        match self {
            Sale::Direct(store) => store.deduct(request).await.map(|_| ()),
            Sale::Gated(store) => store.deduct(request).await.map(|_| ()),
            Sale::Locked(sale) => sale.deduct().await,
        }
    }
}

/// What the clients saw.
pub(crate) struct Tally {
    pub(crate) sold: u64,
    pub(crate) refused: u64,
    pub(crate) errors: BTreeMap<&'static str, u64>,
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) elapsed: Duration,
}

impl Tally {
    fn new() -> Self {
        Self {
            sold: 0,
            refused: 0,
            errors: BTreeMap::new(),
            latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).expect("valid histogram bounds"),
            elapsed: Duration::ZERO,
        }
    }

    pub(crate) fn answered(&self) -> u64 {
        self.sold + self.refused + self.errors.values().sum::<u64>()
    }

    fn merge(&mut self, other: Tally) {
        self.sold += other.sold;
        self.refused += other.refused;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.latency_us.add(&other.latency_us).expect("same bounds");
    }
}

/// `spec.clients` clients send `spec.attempts` keyed one-unit attempts between them, as fast
/// as answers come, bounded by `spec.time_cap`.
async fn attack(sale: &Sale, sku: &SkuId, strategy: Strategy, spec: &FlashSpec, prefix: &str) -> Tally {
    attack_counted(sale, sku, strategy, spec, prefix, Arc::new(AtomicU64::new(0))).await
}

/// [`attack`], counting the attempts taken in `next` (which a fault injector watches).
pub(crate) async fn attack_counted(
    sale: &Sale,
    sku: &SkuId,
    strategy: Strategy,
    spec: &FlashSpec,
    prefix: &str,
    next: Arc<AtomicU64>,
) -> Tally {
    let started = Instant::now();
    let cap = started + spec.time_cap;
    let one = Quantity::new(1).expect("1 is a valid quantity");
    let clients: Vec<_> = (0..spec.clients)
        .map(|_| {
            let (next, sku, attempts) = (Arc::clone(&next), sku.clone(), spec.attempts);
            let sale = sale.clone();
            let prefix = prefix.to_owned();
            tokio::spawn(async move {
                let mut tally = Tally::new();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= attempts || Instant::now() >= cap {
                        return tally;
                    }
                    let key = IdempotencyKey::parse(format!("{prefix}-{n}")).expect("valid key");
                    let request = DeductRequest::new(sku.clone(), one, strategy).with_idempotency_key(key);
                    let sent = Instant::now();
                    match sale.deduct(request).await {
                        Ok(()) => tally.sold += 1,
                        Err(DeductError::InsufficientStock { .. }) => tally.refused += 1,
                        Err(error) => *tally.errors.entry(error.kind()).or_default() += 1,
                    }
                    let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                    tally.latency_us.saturating_record(us.clamp(1, LATENCY_MAX_US));
                }
            })
        })
        .collect();
    let mut total = Tally::new();
    for client in clients {
        if let Ok(tally) = client.await {
            total.merge(tally);
        }
    }
    total.elapsed = started.elapsed();
    total
}

/// The bare check-and-decrement: take `ARGV[1]` units from the counter at `KEYS[1]` if it
/// holds that many (1), else refuse (0). Both Redis ceilings run it: this harness's own
/// client below, and redis-benchmark in the anchors.
pub const CHECK_AND_DECREMENT: &str = "local v = tonumber(redis.call('GET', KEYS[1]) or '0') \
     if v < tonumber(ARGV[1]) then return 0 end \
     redis.call('DECRBY', KEYS[1], ARGV[1]) return 1";

/// The refusal ceiling: `clients` tasks on one multiplexed connection (as the gate's) run a
/// bare check-and-decrement script `calls` times against a counter at 0. Refusals per second.
pub async fn raw_lua_refusals(redis_url: &str, clients: usize, calls: u64) -> anyhow::Result<f64> {
    let client = redis::Client::open(redis_url).context("the Redis URL")?;
    let connection = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let key = format!("bench-ceiling-{}", uuid::Uuid::new_v4().simple());
    let script = Arc::new(redis::Script::new(CHECK_AND_DECREMENT));
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (mut connection, script, next, key) = (
                connection.clone(),
                Arc::clone(&script),
                Arc::clone(&next),
                key.clone(),
            );
            tokio::spawn(async move {
                let mut refused = 0u64;
                while next.fetch_add(1, Ordering::Relaxed) < calls {
                    let admitted: i64 = script.key(&key).arg(1).invoke_async(&mut connection).await?;
                    refused += u64::from(admitted == 0);
                }
                Ok::<u64, redis::RedisError>(refused)
            })
        })
        .collect();
    let mut refused = 0;
    for task in tasks {
        refused += task.await.context("a ceiling client panicked")??;
    }
    let elapsed = started.elapsed();
    anyhow::ensure!(
        refused == calls,
        "the ceiling script admitted {} calls",
        calls - refused
    );
    Ok(refused as f64 / elapsed.as_secs_f64())
}
