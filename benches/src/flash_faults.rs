//! The flash sale under Redis faults (docs/redis.md): the gate + `coalesced` sale of flash.rs
//! on a private Redis of the case's own, faulted mid-sale, once as many attempts as half the
//! supply are taken (with the gate, the first attempts are nearly all sales, so units are
//! left and admissions are in flight when the fault fires):
//! - `redis_killed`: SIGKILL the node, and start it again empty 500 ms later;
//! - `sentinel_failover`: SIGKILL the primary of a primary + replica + 3 sentinels, and wait
//!   for the sentinels to promote the replica (the gate follows them);
//! - `service_killed`: the same sale over HTTP through a `stockguard serve` process, SIGKILLed
//!   mid-sale and started again (`flash_service_kill.rs`).
//!
//! The gate fails open meanwhile, so the database answers alone. After the sale: one reconcile
//! must leave the counter at the database's stock (what the fault left of drift is measured),
//! and a last wave of attempts sells whatever is left, so that sold = supply exactly (no
//! oversell, and no undersell once reconciled). Then the stock, the ledger and the audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use stockguard_core::{InventoryStore, SkuId, Strategy};
use stockguard_redis_gate::{Gate, GateConfig, GateStats, GatedStore, RedisTarget};
use stockguard_testkit::{PrivateRedisNode, PrivateRedisSentinel};

use crate::db::{FreshDatabase, in_fresh_database};
use crate::flash::{FlashPath, FlashSpec, Sale, attack_counted, open_sale};

/// The fault fires once this share of the supply, in percent, has been attempted.
const FAULT_AT_PERCENT_OF_SUPPLY: u64 = 50;
/// How long a killed node stays down.
const REDIS_DOWN_FOR: Duration = Duration::from_millis(500);
/// The gate's bound on each Redis call: short, so requests fail open quickly.
const REDIS_TIMEOUT: Duration = Duration::from_millis(300);
/// The grace after which the reconciler drops a record whose key never committed: the
/// engine's deadline (the store's, 8 s) plus a margin, so a record a fault stranded is gone
/// soon after the sale.
const UNKNOWN_GRACE: Duration = Duration::from_secs(9);
/// Bound on waiting, after the sale, for a reconcile that leaves nothing in flight.
const RECONCILE_WAIT: Duration = Duration::from_secs(20);
/// After a reconcile that raised a sold-out counter, the hold until every sold-out hint has
/// expired (the default hint, 100 ms, and the hold's 20 ms), with a margin: the last wave
/// starts after it, or it would be refused.
pub(crate) const HOLD_WAIT: Duration = Duration::from_millis(300);

/// Which fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FlashFault {
    /// SIGKILL the Redis node, restart it empty.
    RedisKilled,
    /// SIGKILL the primary; the sentinels promote the replica.
    SentinelFailover,
    /// SIGKILL the `stockguard` service with admissions in flight, and start it again
    /// (`flash_service_kill.rs`: the sale goes over HTTP).
    ServiceKilled,
}

impl FlashFault {
    /// The fault's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            FlashFault::RedisKilled => "redis_killed",
            FlashFault::SentinelFailover => "sentinel_failover",
            FlashFault::ServiceKilled => "service_killed",
        }
    }
}

/// One faulted sale.
#[derive(Debug, Clone, Serialize)]
pub struct FlashFaultSpec {
    /// The sale (its path is always the gate + `coalesced`).
    pub sale: FlashSpec,
    /// The fault.
    pub fault: FlashFault,
}

impl FlashFaultSpec {
    /// How the case is named in the progress log and in failures.
    pub fn label(&self) -> String {
        format!(
            "{} flash gate_coalesced + {}",
            self.sale.backend,
            self.fault.name()
        )
        .to_lowercase()
    }
}

/// What one faulted sale found.
#[derive(Debug, Clone, Serialize)]
pub struct FlashFaultResult {
    /// What ran.
    pub spec: FlashFaultSpec,
    /// Units sold during the sale.
    pub sold_in_sale: u64,
    /// Units the last wave sold after the reconcile (the undersell the fault left, fixed).
    pub sold_after_reconcile: u64,
    /// Attempts refused during the sale.
    pub refused: u64,
    /// Answers other than a sale or a refusal, by kind (none expected: the gate fails open).
    pub errors: std::collections::BTreeMap<&'static str, u64>,
    /// Seconds until every attempt of the sale was answered.
    pub answer_all_s: f64,
    /// How long the fault took (down time, or kill to promotion), milliseconds.
    pub fault_ms: u64,
    /// Requests that went straight to the database while Redis was away.
    pub passed: u64,
    /// Tries repeated with the same key after an answer was lost (the service killed).
    pub retried: u64,
    /// |counter − the database's stock| the reconcile found after the sale.
    pub drift_units: i64,
    /// Milliseconds from the end of the sale until a reconcile left nothing in flight.
    pub reconciled_after_ms: u64,
    /// What the checks found wrong; empty when the case passed.
    pub problems: Vec<String>,
}

impl FlashFaultResult {
    /// Why the case fails the run.
    pub fn failure(&self) -> Option<String> {
        (!self.problems.is_empty() || !self.errors.is_empty()).then(|| {
            format!(
                "{}: {}; errors {:?}",
                self.spec.label(),
                self.problems.join("; "),
                self.errors
            )
        })
    }
}

/// One case per fault for each gate sale of `sales`.
///
/// The sentinel failover is Redis's fault, not the database's, and its case costs about 20 s
/// (the sentinels' down-after and election): without `failover_on_every_database` (the quick
/// and smoke profiles) it runs on the first database alone.
pub fn flash_fault_specs(sales: &[FlashSpec], failover_on_every_database: bool) -> Vec<FlashFaultSpec> {
    let gated: Vec<&FlashSpec> = sales
        .iter()
        .filter(|sale| sale.path == FlashPath::GateCoalesced)
        .collect();
    let mut specs = Vec::new();
    for (index, sale) in gated.into_iter().enumerate() {
        let faults: &[FlashFault] = if index == 0 || failover_on_every_database {
            &[
                FlashFault::RedisKilled,
                FlashFault::ServiceKilled,
                FlashFault::SentinelFailover,
            ]
        } else {
            &[FlashFault::RedisKilled, FlashFault::ServiceKilled]
        };
        specs.extend(faults.iter().map(|&fault| FlashFaultSpec {
            sale: sale.clone(),
            fault,
        }));
    }
    specs
}

/// The case's private Redis.
enum PrivateRedis {
    Node(PrivateRedisNode),
    Sentinel(PrivateRedisSentinel),
}

impl PrivateRedis {
    fn start(fault: FlashFault) -> anyhow::Result<Self> {
        Ok(match fault {
            FlashFault::RedisKilled | FlashFault::ServiceKilled => {
                PrivateRedis::Node(PrivateRedisNode::start()?)
            }
            FlashFault::SentinelFailover => PrivateRedis::Sentinel(PrivateRedisSentinel::start()?),
        })
    }

    fn url(&self) -> String {
        match self {
            PrivateRedis::Node(node) => node.node.url(),
            PrivateRedis::Sentinel(topology) => topology.url(),
        }
    }

    /// Fires the fault (blocking); returns how long it lasted.
    fn fault(&mut self) -> anyhow::Result<Duration> {
        match self {
            PrivateRedis::Node(node) => {
                let started = Instant::now();
                node.node.kill();
                std::thread::sleep(REDIS_DOWN_FOR);
                node.node.start()?;
                Ok(started.elapsed())
            }
            PrivateRedis::Sentinel(topology) => Ok(topology.kill_primary_and_wait_for_failover()?),
        }
    }
}

/// What the reconciles after a faulted sale found.
pub(crate) struct Settled {
    /// The stock left in the database.
    pub(crate) left: i64,
    /// |counter − the truth| the first reconcile corrected: the drift the fault left.
    pub(crate) drift_units: i64,
    /// Milliseconds until a reconcile left nothing in flight.
    pub(crate) after_ms: u64,
    /// What was wrong: records still in flight, or a counter that is not the stock.
    pub(crate) problems: Vec<String>,
}

/// After a faulted sale: reconciles until no record is left in flight (a record a fault
/// stranded goes once its key is found committed, or after the grace), bounded by
/// [`RECONCILE_WAIT`]; the counter must then equal the database's stock.
pub(crate) async fn settle_after_sale<S: InventoryStore>(
    gate: &Gate,
    store: &S,
    sku: &SkuId,
) -> anyhow::Result<Settled> {
    let sale_ended = Instant::now();
    let (mut drift_units, mut settled) = (None, false);
    while !settled && sale_ended.elapsed() < RECONCILE_WAIT {
        if let Ok(done) = gate.reconcile(store, sku).await {
            drift_units.get_or_insert(done.before.map_or(0, |before| (before - done.after).abs()));
            settled = done.in_flight == 0;
        }
        if !settled {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let after_ms = u64::try_from(sale_ended.elapsed().as_millis())?;
    let mut problems = Vec::new();
    if !settled {
        problems.push(format!(
            "records still in flight {RECONCILE_WAIT:?} after the sale"
        ));
    }
    let left = store.stock(sku).await?.stock;
    match gate.counter(sku).await {
        Ok(Some(counter)) if counter == left => {}
        other => problems.push(format!(
            "after a reconcile the counter is {other:?}, the stock {left}"
        )),
    }
    Ok(Settled {
        left,
        drift_units: drift_units.unwrap_or(0),
        after_ms,
        problems,
    })
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
/// The `service_killed` fault runs in `flash_service_kill.rs` instead.
pub async fn run_flash_fault(spec: FlashFaultSpec) -> anyhow::Result<FlashFaultResult> {
    anyhow::ensure!(
        spec.fault != FlashFault::ServiceKilled,
        "service_killed runs in flash_service_kill.rs"
    );
    in_fresh_database(spec.sale.backend, async |database| run_in(&spec, database).await).await
}

async fn run_in(spec: &FlashFaultSpec, database: &FreshDatabase) -> anyhow::Result<FlashFaultResult> {
    let sale_spec = &spec.sale;
    let fault = spec.fault;
    let mut redis = tokio::task::spawn_blocking(move || PrivateRedis::start(fault))
        .await?
        .context("starting the case's Redis")?;
    let mut config = GateConfig::new(RedisTarget::parse(&redis.url())?);
    config.redis_timeout = REDIS_TIMEOUT;
    config.unknown_grace = UNKNOWN_GRACE;
    let gate = Arc::new(Gate::connect(config).await.context("connecting the gate")?);

    let (store, sku) = open_sale(sale_spec, database).await?;
    let gated = Arc::new(GatedStore::new(store.clone(), Arc::clone(&gate)));
    gate.reconcile(&*gated, &sku)
        .await
        .context("warming the counter")?;
    let sale = Sale::Gated(Arc::clone(&gated));

    // The fault fires from a blocking thread once the share of attempts is taken.
    let next = Arc::new(AtomicU64::new(0));
    let fire_at = u64::try_from(sale_spec.supply)? * FAULT_AT_PERCENT_OF_SUPPLY / 100;
    let watched = Arc::clone(&next);
    let injector = tokio::spawn(async move {
        while watched.load(Ordering::Relaxed) < fire_at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::task::spawn_blocking(move || {
            let took = redis.fault();
            (redis, took)
        })
        .await
    });
    let tally = attack_counted(&sale, &sku, Strategy::Coalesced, sale_spec, "ff", next).await;
    let (redis, took) = injector.await?.context("the fault injector")?;
    let fault_ms = u64::try_from(took.context("firing the fault")?.as_millis())?;

    let mut problems = Vec::new();
    if tally.answered() < sale_spec.attempts {
        problems.push(format!(
            "only {} of {} attempts answered within {:?}",
            tally.answered(),
            sale_spec.attempts,
            sale_spec.time_cap
        ));
    }
    // Reconcile once the gate reaches Redis again, until no record is left in flight (a
    // record a fault stranded goes once its key is found committed, or after the grace): the
    // counter is then the truth. The first reconcile's correction is the drift.
    let settled = settle_after_sale(&gate, &*gated, &sku).await?;
    problems.extend(settled.problems);
    let (left, drift_units, reconciled_after_ms) = (settled.left, settled.drift_units, settled.after_ms);
    tokio::time::sleep(HOLD_WAIT).await;
    // The last wave: the rest of the supply, plus as many again, all through the gate.
    let wave = FlashSpec {
        attempts: u64::try_from(left)? * 2 + 10,
        ..sale_spec.clone()
    };
    let last = attack_counted(
        &sale,
        &sku,
        Strategy::Coalesced,
        &wave,
        "fw",
        Arc::new(AtomicU64::new(0)),
    )
    .await;
    let sold = tally.sold + last.sold;
    if i64::try_from(sold)? != sale_spec.supply {
        problems.push(format!("sold {sold} of a supply of {}", sale_spec.supply));
    }
    let level = store.stock(&sku).await?;
    if level.stock != 0 {
        problems.push(format!("stock {} after the last wave", level.stock));
    }
    let ledger_rows: i64 = store.snapshot().await?.iter().map(|s| s.ledger_rows).sum();
    if ledger_rows != i64::try_from(sold)? {
        problems.push(format!("{ledger_rows} ledger rows for {sold} sales"));
    }
    let audit = store.audit().await?;
    if !audit.is_clean() {
        problems.push(format!("the library's audit is not clean: {audit:?}"));
    }
    let mut errors = tally.errors.clone();
    for (kind, count) in last.errors {
        *errors.entry(kind).or_default() += count;
    }
    let passed = GateStats::get(&gate.stats().passed);
    store.close().await;
    drop(redis);
    Ok(FlashFaultResult {
        spec: spec.clone(),
        sold_in_sale: tally.sold,
        sold_after_reconcile: last.sold,
        refused: tally.refused,
        errors,
        answer_all_s: tally.elapsed.as_secs_f64(),
        fault_ms,
        passed,
        retried: 0,
        drift_units,
        reconciled_after_ms,
        problems,
    })
}
