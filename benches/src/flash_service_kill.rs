//! The flash sale with the service SIGKILLed mid-sale (docs/redis.md): the gate + `coalesced`
//! sale of flash.rs, but through a real `stockguard serve` process with the gate in front
//! (`--redis-url`, a private Redis node of the case's own), sent keyed over HTTP. Once
//! attempts for half the supply are taken, the process is SIGKILLed with admissions in flight
//! and started again on the same port.
//!
//! A client whose answer was lost (the connection dropped, a 5xx, `outcome_unknown`) retries
//! with the same key until it gets a definite answer, as a real client does. Records the kill
//! stranded in Redis are resolved by the restarted service's reconciler (found committed, or
//! dropped after the grace). After the sale the harness reconciles until nothing is in
//! flight, the counter must equal the database's stock, and a last wave sells what is left.
//!
//! Checks: sold = supply exactly; stock 0; one ledger row per sale; every key answered 200 is
//! in the ledger, and no key answered 409 is (a refusal changed nothing); the audit.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use stockguard_core::{COMMITTED_KEYS_MAX, IdempotencyKey, InventoryStore, SkuId, Strategy};
use stockguard_redis_gate::{Gate, GateConfig, RedisTarget};
use stockguard_testkit::PrivateRedisNode;
use tokio::sync::Mutex;

use crate::chaos::service::{Service, ServiceConfig, find_binary, free_port};
use crate::db::{FreshDatabase, in_fresh_database};
use crate::flash::open_sale;
use crate::flash_faults::{FlashFaultResult, FlashFaultSpec, HOLD_WAIT, settle_after_sale};

/// The fault fires once this share of the supply, in percent, has been attempted.
const FAULT_AT_PERCENT_OF_SUPPLY: u64 = 50;
/// HTTP clients: each a keep-alive connection to the service.
const CLIENTS: usize = 64;
/// The service's request timeout; its gate's grace for a record whose key never committed
/// is one second more, so records the kill stranded go soon after the sale.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// Tries of one attempt before it counts as unresolved (a problem).
const TRIES_MAX: u32 = 200;
/// Pause before a retry with the same key.
const RETRY_PAUSE: Duration = Duration::from_millis(20);

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
pub async fn run_service_killed(spec: FlashFaultSpec) -> anyhow::Result<FlashFaultResult> {
    in_fresh_database(spec.sale.backend, async |database| run_in(&spec, database).await).await
}

/// What one wave of attempts got.
#[derive(Debug, Default)]
struct Wave {
    sold: Vec<String>,
    refused: Vec<String>,
    unresolved: u64,
    retried: u64,
    elapsed: Duration,
}

/// The answer a client acts on.
enum Answer {
    Sold,
    Refused,
    /// No definite answer (a lost connection, a 5xx, `outcome_unknown`): retry with the key.
    Retry,
}

async fn run_in(spec: &FlashFaultSpec, database: &FreshDatabase) -> anyhow::Result<FlashFaultResult> {
    let sale = &spec.sale;
    // The harness's own store: it stocks the SKU, and reads and audits at the end.
    let (store, sku) = open_sale(sale, database).await?;
    let redis = tokio::task::spawn_blocking(PrivateRedisNode::start)
        .await?
        .context("starting the case's Redis")?;
    let dir = tempfile::tempdir()?;
    let token = format!("flash-{}", uuid::Uuid::new_v4().simple());
    let config = ServiceConfig {
        bin: find_binary(None)?,
        port: free_port()?,
        database_url: database.url(),
        strategy: Strategy::Coalesced,
        token: token.clone(),
        log: dir.path().join("service.log"),
        request_timeout: REQUEST_TIMEOUT,
        pool_size: sale.pool_size,
        acquire_timeout: Duration::from_secs(1),
        lock_timeout: Duration::from_secs(1),
        shutdown_grace: Duration::from_secs(2),
        redis_url: Some(redis.node.url()),
    };
    let service = Service::start(config).await.context("starting the service")?;
    let client = Client::new(&service.base_url(), &token, &sku)?;

    // The kill fires once the share of attempts is taken; the service comes back on its port.
    let next = Arc::new(AtomicU64::new(0));
    let fire_at = u64::try_from(sale.supply)? * FAULT_AT_PERCENT_OF_SUPPLY / 100;
    let watched = Arc::clone(&next);
    let injector = tokio::spawn(async move {
        let mut service = service;
        while watched.load(Ordering::Relaxed) < fire_at {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let started = Instant::now();
        let killed = service.kill().await.map(|_| ());
        let restarted = service.restart().await.map(|_| ());
        (service, killed.and(restarted).map(|()| started.elapsed()))
    });
    let in_sale = client.attack(sale.attempts, "fk", sale.time_cap, next).await;
    let (mut service, took) = injector.await.context("the fault injector panicked")?;
    let fault_ms = u64::try_from(took.context("killing and restarting the service")?.as_millis())?;

    // One reconcile pass after another until nothing is left in flight: the counter is then
    // the truth. The first pass's correction is the drift the kill left.
    let mut gate_config = GateConfig::new(RedisTarget::parse(&redis.node.url())?);
    gate_config.unknown_grace = crate::chaos::gate::unknown_grace(REQUEST_TIMEOUT);
    let gate = Gate::connect(gate_config).await.context("connecting the gate")?;
    let settled = settle_after_sale(&gate, &store, &sku).await?;
    let mut problems = settled.problems;
    let left = settled.left;
    tokio::time::sleep(HOLD_WAIT).await;
    // The last wave: the rest of the supply, plus as many again.
    let wave_attempts = u64::try_from(left)? * 2 + 10;
    let last = client
        .attack(wave_attempts, "fw", sale.time_cap, Arc::new(AtomicU64::new(0)))
        .await;
    let stopped = service.stop().await;

    let sold = in_sale.sold.len() + last.sold.len();
    if i64::try_from(sold)? != sale.supply {
        problems.push(format!("sold {sold} of a supply of {}", sale.supply));
    }
    if in_sale.unresolved + last.unresolved > 0 {
        problems.push(format!(
            "{} attempts got no definite answer in {TRIES_MAX} tries",
            in_sale.unresolved + last.unresolved
        ));
    }
    if store.stock(&sku).await?.stock != 0 {
        problems.push("stock left after the last wave".to_owned());
    }
    let ledger_rows: i64 = store.snapshot().await?.iter().map(|s| s.ledger_rows).sum();
    if ledger_rows != i64::try_from(sold)? {
        problems.push(format!("{ledger_rows} ledger rows for {sold} sales"));
    }
    let sold_keys: Vec<&String> = in_sale.sold.iter().chain(&last.sold).collect();
    let refused_keys: Vec<&String> = in_sale.refused.iter().chain(&last.refused).collect();
    let sold_found = committed(&store, &sold_keys).await?;
    if sold_found != sold_keys.len() {
        problems.push(format!(
            "{} of {} keys answered 200 are in the ledger",
            sold_found,
            sold_keys.len()
        ));
    }
    let refused_found = committed(&store, &refused_keys).await?;
    if refused_found > 0 {
        problems.push(format!("{refused_found} keys answered 409 are in the ledger"));
    }
    let audit = store.audit().await?;
    if !audit.is_clean() {
        problems.push(format!("the library's audit is not clean: {audit:?}"));
    }
    store.close().await;
    if let Err(error) = stopped {
        problems.push(format!("stopping the service: {error:#}"));
    }
    Ok(FlashFaultResult {
        spec: spec.clone(),
        sold_in_sale: in_sale.sold.len() as u64,
        sold_after_reconcile: last.sold.len() as u64,
        refused: in_sale.refused.len() as u64,
        errors: std::collections::BTreeMap::new(),
        answer_all_s: in_sale.elapsed.as_secs_f64(),
        fault_ms,
        passed: 0,
        retried: in_sale.retried + last.retried,
        drift_units: settled.drift_units,
        reconciled_after_ms: settled.after_ms,
        problems,
    })
}

/// How many of `keys` the ledger holds.
async fn committed<S: InventoryStore>(store: &S, keys: &[&String]) -> anyhow::Result<usize> {
    let mut found = 0;
    for chunk in keys.chunks(COMMITTED_KEYS_MAX) {
        let parsed: Vec<IdempotencyKey> = chunk
            .iter()
            .map(|key| IdempotencyKey::parse(key.as_str()))
            .collect::<Result<_, _>>()?;
        found += store.committed_keys(&parsed).await?.len();
    }
    Ok(found)
}

/// The buyers' HTTP side.
struct Client {
    http: reqwest::Client,
    url: String,
    authorization: String,
}

impl Client {
    fn new(base_url: &str, token: &str, sku: &SkuId) -> anyhow::Result<Arc<Self>> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(CLIENTS)
            .connect_timeout(Duration::from_secs(1))
            .timeout(REQUEST_TIMEOUT + Duration::from_secs(1))
            .build()?;
        Ok(Arc::new(Self {
            http,
            url: format!("{base_url}/v1/skus/{sku}/deduct"),
            authorization: format!("Bearer {token}"),
        }))
    }

    /// One try.
    async fn send(&self, key: &str) -> Answer {
        let sent = self
            .http
            .post(&self.url)
            .header("authorization", &self.authorization)
            .header("idempotency-key", key)
            .header("content-type", "application/json")
            .body(r#"{"quantity":1}"#)
            .send()
            .await;
        let Ok(response) = sent else { return Answer::Retry };
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        match status {
            200 | 201 => Answer::Sold,
            409 if body.contains("insufficient_stock") => Answer::Refused,
            _ => Answer::Retry,
        }
    }

    /// `attempts` one-unit attempts, keyed `<prefix>-<n>`, from [`CLIENTS`] tasks; each is
    /// retried with its key until a definite answer. `next` counts attempts taken.
    async fn attack(
        self: &Arc<Self>,
        attempts: u64,
        prefix: &str,
        cap: Duration,
        next: Arc<AtomicU64>,
    ) -> Wave {
        let wave = Arc::new(Mutex::new(Wave::default()));
        let started = Instant::now();
        let until = started + cap;
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (client, wave, next) = (Arc::clone(self), Arc::clone(&wave), Arc::clone(&next));
                let prefix = prefix.to_owned();
                tokio::spawn(async move {
                    loop {
                        let n = next.fetch_add(1, Ordering::Relaxed);
                        if n >= attempts || Instant::now() >= until {
                            return;
                        }
                        let key = format!("{prefix}-{n}");
                        let mut tries = 0;
                        let answer = loop {
                            tries += 1;
                            match client.send(&key).await {
                                Answer::Retry if tries < TRIES_MAX && Instant::now() < until => {
                                    tokio::time::sleep(RETRY_PAUSE).await;
                                }
                                answer => break answer,
                            }
                        };
                        let mut wave = wave.lock().await;
                        wave.retried += u64::from(tries - 1);
                        match answer {
                            Answer::Sold => wave.sold.push(key),
                            Answer::Refused => wave.refused.push(key),
                            Answer::Retry => wave.unresolved += 1,
                        }
                    }
                })
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
        let mut wave = std::mem::take(&mut *wave.lock().await);
        wave.elapsed = started.elapsed();
        wave
    }
}
