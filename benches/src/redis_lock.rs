//! The seed's layered lock, measured: a per-SKU Redis lock (`SET NX PX`) around the seed's
//! unguarded read-modify-write, with and without a fencing token (docs/redis.md).
//!
//! Clients take the lock, read the stock, write `read − 1` with its ledger row, and release.
//! Some holders pause past the lock's TTL (as a GC pause or a stalled VM would) between the
//! read and the write, so another client takes the lock and reads the same stock.
//! - `redis_lock_unfenced` (NEGATIVE CONTROL): both writes land; an update is lost and the
//!   shop sells more than it had. The harness requires the audit to catch it.
//! - `redis_lock_fenced`: the same read-modify-write, with only the fence added (the token is
//!   registered in the database before the read and checked in the write's transaction): the
//!   paused holder's write is refused, nothing is oversold, and the audit passes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use serde::Serialize;
use stockguard_core::InventoryStore;
use stockguard_redis_gate::RedisTarget;
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::measure::open_store;

/// Units on sale.
const SUPPLY: i64 = 100;
/// Clients contending for the lock.
const CLIENTS: usize = 8;
/// The lock's time to live.
const LOCK_TTL: Duration = Duration::from_millis(40);
/// How long a paused holder sleeps between its read and its write: past the TTL.
const PAUSE: Duration = Duration::from_millis(120);
/// Every this many lock acquisitions, the holder pauses.
const PAUSE_EVERY: u64 = 7;
/// Bound on a case.
const TIME_CAP: Duration = Duration::from_secs(60);

/// Takes the lock and, when taken, issues the next fencing token; 0 when the lock is held.
pub(crate) const ACQUIRE: &str = "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then \
                       return redis.call('INCR', KEYS[2]) else return 0 end";
/// Releases the lock only if the caller still owns it.
pub(crate) const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) \
                       else return 0 end";

/// One `redis_lock` case.
#[derive(Debug, Clone, Serialize)]
pub struct LockSpec {
    /// The database.
    pub backend: Backend,
    /// With the fencing token.
    pub fenced: bool,
    /// Redis.
    #[serde(skip)]
    pub redis_url: String,
}

impl LockSpec {
    /// The path's name.
    pub fn name(&self) -> &'static str {
        if self.fenced {
            "redis_lock_fenced"
        } else {
            "redis_lock_unfenced"
        }
    }
}

/// What one case found.
#[derive(Debug, Clone, Serialize)]
pub struct LockResult {
    /// What ran.
    pub spec: LockSpec,
    /// Units on sale.
    pub supply: i64,
    /// Writes that committed: units the clients were told they bought.
    pub sold: u64,
    /// Units sold beyond the supply.
    pub oversold: u64,
    /// Writes refused by the fence (a holder whose lock had expired).
    pub fenced_out: u64,
    /// Holders that paused past the TTL.
    pub pauses: u64,
    /// Whether the library's audit passed (`initial + Σ ledger = stock`, stock ≥ 0).
    pub audit_clean: bool,
    /// Seconds the case took.
    pub elapsed_s: f64,
}

impl LockResult {
    /// The case's verdict: the fenced path must neither oversell nor fail the audit; the
    /// negative control must be caught (it oversold, or the audit found its lost update).
    pub fn failure(&self) -> Option<String> {
        let caught = self.oversold > 0 || !self.audit_clean;
        match (self.spec.fenced, caught) {
            (true, true) => Some(format!(
                "{} on {}: oversold {} (audit clean: {})",
                self.spec.name(),
                self.spec.backend,
                self.oversold,
                self.audit_clean
            )),
            (false, false) => Some(format!(
                "HARNESS BROKEN: the negative control {} on {} was not caught ({} pauses)",
                self.spec.name(),
                self.spec.backend,
                self.pauses
            )),
            _ => None,
        }
    }
}

/// Both cases per database.
pub fn lock_specs(databases: &[Backend], redis_url: &str) -> Vec<LockSpec> {
    databases
        .iter()
        .flat_map(|backend| {
            [false, true].map(|fenced| LockSpec {
                backend: *backend,
                fenced,
                redis_url: redis_url.to_owned(),
            })
        })
        .collect()
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens. The lock
/// lives on one Redis node, or on a Redis Cluster when `redis_url` names one
/// (`redis+cluster://host:port,...`, as the service's `--redis-url` does): the lock and its
/// fence counter share a hash tag, so each script runs in one slot.
pub async fn run_lock(spec: LockSpec) -> anyhow::Result<LockResult> {
    let target = RedisTarget::parse(&spec.redis_url).context("the lock's Redis URL")?;
    match target {
        RedisTarget::Single(url) => {
            let redis = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            in_fresh_database(spec.backend, async |database| {
                run_in(&spec, database, redis).await
            })
            .await
        }
        RedisTarget::Cluster(nodes) => {
            let redis = ClusterClient::new(nodes)?.get_async_connection().await?;
            in_fresh_database(spec.backend, async |database| {
                run_in(&spec, database, redis).await
            })
            .await
        }
        RedisTarget::Sentinel { .. } => bail!("the redis_lock case runs on one node or a cluster"),
    }
}

async fn run_in<R>(spec: &LockSpec, database: &FreshDatabase, mut redis: R) -> anyhow::Result<LockResult>
where
    R: ConnectionLike + Clone + Send + Sync + 'static,
{
    // Opening the store migrates the fresh database; its audit reads the result.
    let mut settings = stockguard_api::store::StoreSettings::new(database.target()?);
    settings.pool_size = 2;
    let store = open_store(settings).await?;
    let sku = "lock-0".to_owned();
    let pool = Arc::new(RawPool::connect(database, u32::try_from(CLIENTS)? + 1).await?);
    pool.reset_inventory(std::slice::from_ref(&sku), &[SUPPLY])
        .await?;
    pool.create_fence(&sku).await.context("creating the fence")?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let keys = Arc::new((
        format!("bench-lock:{{{tag}}}:lock"),
        format!("bench-lock:{{{tag}}}:fence"),
    ));
    let (sold, fenced_out, pauses, acquisitions) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let started = Instant::now();
    let cap = started + TIME_CAP;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let (pool, mut redis, keys, sku) =
                (Arc::clone(&pool), redis.clone(), Arc::clone(&keys), sku.clone());
            let counters = (
                Arc::clone(&sold),
                Arc::clone(&fenced_out),
                Arc::clone(&pauses),
                Arc::clone(&acquisitions),
            );
            let fenced = spec.fenced;
            tokio::spawn(async move {
                let (acquire, release) = (redis::Script::new(ACQUIRE), redis::Script::new(RELEASE));
                let ttl_ms = u64::try_from(LOCK_TTL.as_millis()).unwrap_or(u64::MAX);
                let mut attempt = 0u64;
                while Instant::now() < cap {
                    attempt += 1;
                    let owner = format!("{client}-{attempt}");
                    let token: i64 = acquire
                        .key(&keys.0)
                        .key(&keys.1)
                        .arg(&owner)
                        .arg(ttl_ms)
                        .invoke_async(&mut redis)
                        .await?;
                    if token == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    }
                    let nth = counters.3.fetch_add(1, Ordering::Relaxed) + 1;
                    if fenced && !pool.register_fence(&sku, token).await? {
                        // A newer holder registered first: this one may not even read.
                        counters.1.fetch_add(1, Ordering::Relaxed);
                        let _: i64 = release.key(&keys.0).arg(&owner).invoke_async(&mut redis).await?;
                        continue;
                    }
                    let read = pool.read_stock_unlocked(&sku).await?;
                    if read < 1 {
                        let _: i64 = release.key(&keys.0).arg(&owner).invoke_async(&mut redis).await?;
                        return Ok::<(), anyhow::Error>(());
                    }
                    if nth % PAUSE_EVERY == 0 {
                        // The holder stalls past its lock's TTL: another client takes the lock.
                        counters.2.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(PAUSE).await;
                    }
                    if pool
                        .write_unguarded(&sku, read, 1, fenced.then_some(token))
                        .await?
                    {
                        counters.0.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counters.1.fetch_add(1, Ordering::Relaxed);
                    }
                    let _: i64 = release.key(&keys.0).arg(&owner).invoke_async(&mut redis).await?;
                }
                Ok(())
            })
        })
        .collect();
    for client in clients {
        client.await.context("a lock client panicked")??;
    }
    let elapsed = started.elapsed();
    let audit = store.audit().await?;
    store.close().await;
    let _: i64 = redis::cmd("DEL")
        .arg(&keys.0)
        .arg(&keys.1)
        .query_async(&mut redis)
        .await?;
    let sold = sold.load(Ordering::Relaxed);
    Ok(LockResult {
        spec: spec.clone(),
        supply: SUPPLY,
        sold,
        oversold: sold.saturating_sub(u64::try_from(SUPPLY)?),
        fenced_out: fenced_out.load(Ordering::Relaxed),
        pauses: pauses.load(Ordering::Relaxed),
        audit_clean: audit.is_clean(),
        elapsed_s: elapsed.as_secs_f64(),
    })
}
