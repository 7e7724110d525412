//! The admission gate: per-SKU counters in Redis, checked and decremented atomically, with an
//! in-flight record under each admitted request's idempotency key until the database answers.
//!
//! The database stays the truth. The gate only decides which requests reach it: a refusal by
//! the gate is a definite "nothing changed", and an admitted request is still decided by the
//! engine. So the gate can never cause oversell; a counter that drifts low causes undersell
//! (refusals while the database has stock) until the reconciler recomputes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stockguard_core::engine::UNAVAILABLE_RETRY_AFTER;
use stockguard_core::{COMMITTED_KEYS_MAX, DeductError, IdempotencyKey, InventoryStore, SkuId};

use crate::config::{GateConfig, RedisDownPolicy};
use crate::link::{Link, LinkError};
use crate::scripts::Scripts;
use crate::stats::GateStats;

/// Most `SET NX` calls [`Gate::prime`] keeps in flight.
pub const PRIME_IN_FLIGHT_MAX: usize = 1_000;

/// What the gate decided for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Units taken from the counter and recorded in flight under the key: the request goes to
    /// the database, and [`Gate::finish`] must be told how it ended.
    Admitted,
    /// Too few units in the counter: refuse without touching the database.
    Refused {
        /// Units the counter holds.
        available: i64,
    },
    /// Go to the database with no record (Redis down under fail-open, a SKU the database does
    /// not know, the key in flight for other units, or a key that committed through the gate
    /// before, so the database replays it even after sell-out); nothing to finish.
    Pass,
}

/// How a request the gate admitted ended at the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It committed: the units stay taken.
    Committed,
    /// Nothing changed (a definite refusal, a failure before anything was sent, or a replay
    /// of a change committed earlier): the units go back.
    NothingChanged,
    /// `outcome_unknown`: the record stays until the key resolves it (a client retry with
    /// the same key, or the reconciler's lookup).
    Unknown,
}

impl Outcome {
    /// The outcome of a store answer; `replayed` says whether an `Ok` was a replay.
    pub fn of<T>(answer: &Result<T, DeductError>, replayed: impl FnOnce(&T) -> bool) -> Self {
        match answer {
            Ok(value) if replayed(value) => Outcome::NothingChanged,
            Ok(_) => Outcome::Committed,
            Err(error) if error.nothing_changed() => Outcome::NothingChanged,
            Err(_) => Outcome::Unknown,
        }
    }
}

/// One SKU's counter recomputed from the database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reconciled {
    /// The counter before (`None` when it was cold).
    pub before: Option<i64>,
    /// The counter after: available in the database less the units still in flight.
    pub after: i64,
    /// Units of the records still in flight.
    pub in_flight: i64,
    /// Records found committed and dropped.
    pub committed: usize,
    /// Records past the grace that never committed, dropped.
    pub stale: usize,
}

/// Why a reconcile failed; the counter was left as it was.
#[derive(Debug)]
pub enum ReconcileError {
    /// Redis failed or did not answer in time.
    Redis(String),
    /// The database failed.
    Database(DeductError),
}

impl std::fmt::Display for ReconcileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReconcileError::Redis(reason) => write!(f, "reconcile: {reason}"),
            ReconcileError::Database(error) => write!(f, "reconcile: database: {error}"),
        }
    }
}

impl std::error::Error for ReconcileError {}

impl From<LinkError> for ReconcileError {
    fn from(error: LinkError) -> Self {
        ReconcileError::Redis(error.to_string())
    }
}

/// The gate. Shared by every request of a service (`Arc<Gate>`).
#[derive(Debug)]
pub struct Gate {
    link: Link,
    config: GateConfig,
    scripts: Scripts,
    stats: GateStats,
    /// Where the next reconcile pass resumes its walk of the SKU list (an SSCAN cursor).
    reconcile_cursor: AtomicU64,
}

impl Gate {
    /// Checks the settings and connects to Redis.
    pub async fn connect(config: GateConfig) -> Result<Self, DeductError> {
        config.validate()?;
        let link = Link::connect(&config.target, config.redis_timeout)
            .await
            .map_err(|error| DeductError::Unavailable {
                reason: "admission gate: redis unreachable",
                retry_after: UNAVAILABLE_RETRY_AFTER,
                source: Some(Box::new(error)),
            })?;
        Ok(Self {
            link,
            config,
            scripts: Scripts::new(),
            stats: GateStats::default(),
            reconcile_cursor: AtomicU64::new(0),
        })
    }

    /// The settings.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// What the gate did so far.
    pub fn stats(&self) -> &GateStats {
        &self.stats
    }

    fn timeout(&self) -> Duration {
        self.config.redis_timeout
    }

    /// The SKU's counter key. The `{sku}` hash tag puts both of a SKU's keys in one cluster
    /// slot (SKU ids cannot hold braces).
    pub fn units_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:units", self.config.namespace, sku)
    }

    /// The SKU's in-flight hash key.
    pub fn in_flight_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:inflight", self.config.namespace, sku)
    }

    /// The SKU's done hash: keys that committed through the gate, and their units.
    pub fn done_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:done", self.config.namespace, sku)
    }

    /// The set of SKUs with a counter, which the reconciler walks.
    fn registry_key(&self) -> String {
        format!("{}:skus", self.config.namespace)
    }

    /// Admits `units` of `sku` under `key`, warming a cold counter from `store` first.
    /// `Err` only under fail-closed with Redis down (`Unavailable`, nothing changed).
    pub async fn admit<S: InventoryStore>(
        &self,
        store: &S,
        sku: &SkuId,
        key: &IdempotencyKey,
        units: i64,
    ) -> Result<Admission, DeductError> {
        match self.try_admit(sku, key, units).await {
            Ok(Some(admission)) => Ok(admission),
            // Cold: compute the counter from the database, then try once more.
            Ok(None) => match self.reconcile(store, sku).await {
                Ok(_) => match self.try_admit(sku, key, units).await {
                    Ok(Some(admission)) => Ok(admission),
                    Ok(None) => Ok(self.pass()),
                    Err(error) => self.redis_down(error),
                },
                Err(ReconcileError::Database(_)) => Ok(self.pass()),
                Err(ReconcileError::Redis(reason)) => {
                    tracing::warn!(%sku, %reason, "admission gate: warm-up failed");
                    self.redis_down(LinkError::TimedOut)
                }
            },
            Err(error) => self.redis_down(error),
        }
    }

    /// One run of the admission script: `None` when the counter is cold.
    async fn try_admit(
        &self,
        sku: &SkuId,
        key: &IdempotencyKey,
        units: i64,
    ) -> Result<Option<Admission>, LinkError> {
        let mut invocation = self.scripts.admit.prepare_invoke();
        invocation
            .key(self.units_key(sku))
            .key(self.in_flight_key(sku))
            .key(self.done_key(sku))
            .arg(key.as_str())
            .arg(units);
        let admitted = self.link.invoke(&invocation, self.timeout()).await;
        self.stats.saw(&admitted);
        let (status, left): (i64, i64) = admitted?;
        Ok(match status {
            1 | 2 => {
                GateStats::bump(&self.stats.admitted);
                Some(Admission::Admitted)
            }
            0 => {
                GateStats::bump(&self.stats.refused);
                Some(Admission::Refused { available: left })
            }
            3 => None,
            _ => Some(self.pass()),
        })
    }

    fn pass(&self) -> Admission {
        GateStats::bump(&self.stats.passed);
        Admission::Pass
    }

    /// Applies the Redis-down policy after a failed call.
    fn redis_down(&self, error: LinkError) -> Result<Admission, DeductError> {
        GateStats::bump(&self.stats.redis_errors);
        match self.config.when_down {
            RedisDownPolicy::FailOpen => {
                tracing::debug!(%error, "admission gate: redis down, going to the database");
                Ok(self.pass())
            }
            RedisDownPolicy::FailClosed => {
                GateStats::bump(&self.stats.refused_redis_down);
                Err(DeductError::Unavailable {
                    reason: "admission gate: redis unavailable (fail closed)",
                    retry_after: UNAVAILABLE_RETRY_AFTER,
                    source: Some(Box::new(error)),
                })
            }
        }
    }

    /// Resolves an admitted request's record. A failure here leaves the record to the
    /// reconciler (which looks its key up), so it is logged, never returned.
    pub async fn finish(&self, sku: &SkuId, key: &IdempotencyKey, outcome: Outcome) {
        let result = match outcome {
            Outcome::Committed => {
                let mut invocation = self.scripts.settle.prepare_invoke();
                invocation
                    .key(self.in_flight_key(sku))
                    .key(self.done_key(sku))
                    .arg(key.as_str());
                let settled = self.link.invoke::<i64>(&invocation, self.timeout()).await;
                settled.map(|_| GateStats::bump(&self.stats.settled))
            }
            Outcome::NothingChanged => {
                let mut invocation = self.scripts.give_back.prepare_invoke();
                invocation
                    .key(self.units_key(sku))
                    .key(self.in_flight_key(sku))
                    .arg(key.as_str());
                let given = self.link.invoke::<i64>(&invocation, self.timeout()).await;
                given.map(|_| GateStats::bump(&self.stats.given_back))
            }
            Outcome::Unknown => {
                GateStats::bump(&self.stats.kept_unknown);
                Ok(())
            }
        };
        self.stats.saw(&result);
        if let Err(error) = result {
            GateStats::bump(&self.stats.redis_errors);
            tracing::warn!(%sku, %error, ?outcome, "admission gate: record left to the reconciler");
        }
    }

    /// The SKU's counter, `None` when cold.
    pub async fn counter(&self, sku: &SkuId) -> Result<Option<i64>, ReconcileError> {
        let command = redis::cmd("GET").arg(self.units_key(sku)).to_owned();
        Ok(self.link.query(&command, self.timeout()).await?)
    }

    /// The SKU's in-flight records: key, units, age in ms on the Redis clock.
    pub async fn in_flight(&self, sku: &SkuId) -> Result<Vec<(String, i64, i64)>, ReconcileError> {
        let mut invocation = self.scripts.in_flight.prepare_invoke();
        invocation.key(self.in_flight_key(sku));
        let flat: Vec<redis::Value> = self.link.invoke(&invocation, self.timeout()).await?;
        let mut records = Vec::with_capacity(flat.len() / 3);
        for triple in flat.chunks_exact(3) {
            let parsed = (
                redis::from_redis_value_ref::<String>(&triple[0]),
                redis::from_redis_value_ref::<i64>(&triple[1]),
                redis::from_redis_value_ref::<i64>(&triple[2]),
            );
            if let (Ok(key), Ok(units), Ok(age_ms)) = parsed {
                records.push((key, units, age_ms));
            }
        }
        Ok(records)
    }

    /// Recomputes the SKU's counter from `store`: looks every in-flight record's key up, drops
    /// the committed ones and those past the grace that never committed, reads the available
    /// units, and sets the counter to them less the units still in flight, atomically against
    /// admissions. A record that commits between the lookup and the read is subtracted twice
    /// until the next reconcile (a short undersell, never an oversell).
    pub async fn reconcile<S: InventoryStore>(
        &self,
        store: &S,
        sku: &SkuId,
    ) -> Result<Reconciled, ReconcileError> {
        let records = self.in_flight(sku).await?;
        let (mut committed, mut stale) = (Vec::new(), Vec::new());
        let grace_ms = i64::try_from(self.config.unknown_grace.as_millis()).unwrap_or(i64::MAX);
        for chunk in records.chunks(COMMITTED_KEYS_MAX) {
            let keys: Vec<IdempotencyKey> = chunk
                .iter()
                .filter_map(|(key, _, _)| IdempotencyKey::parse(key.as_str()).ok())
                .collect();
            let found = store
                .committed_keys(&keys)
                .await
                .map_err(ReconcileError::Database)?;
            for (key, _, age_ms) in chunk {
                if found.iter().any(|done| done.as_str() == key) {
                    committed.push(key.clone());
                } else if *age_ms >= grace_ms {
                    stale.push(key.clone());
                }
            }
        }
        // Read after the lookups: a record found committed is in this figure already.
        let available = match store.stock(sku).await {
            Ok(level) => level.stock,
            Err(error) => return Err(ReconcileError::Database(error)),
        };
        let mut invocation = self.scripts.reconcile.prepare_invoke();
        invocation
            .key(self.units_key(sku))
            .key(self.in_flight_key(sku))
            .key(self.done_key(sku))
            .arg(available)
            .arg(committed.len());
        for key in committed.iter().chain(&stale) {
            invocation.arg(key.as_str());
        }
        let reconciled = self.link.invoke(&invocation, self.timeout()).await;
        self.stats.saw(&reconciled);
        let (before, after, in_flight): (i64, i64, i64) = reconciled?;
        let register = redis::cmd("SADD")
            .arg(self.registry_key())
            .arg(sku.as_str())
            .to_owned();
        self.link.query::<i64>(&register, self.timeout()).await?;
        GateStats::bump(&self.stats.reconciled);
        GateStats::add(&self.stats.resolved_committed, committed.len() as u64);
        GateStats::add(&self.stats.resolved_stale, stale.len() as u64);
        let before = (before >= 0).then_some(before);
        if let Some(before) = before {
            GateStats::add(&self.stats.drift_units, before.abs_diff(after));
        }
        Ok(Reconciled {
            before,
            after,
            in_flight,
            committed: committed.len(),
            stale: stale.len(),
        })
    }

    /// One reconcile pass: up to `reconcile_batch` SKUs from the list, starting where the last
    /// pass stopped (a pass that reaches the end starts over next time); returns how many
    /// were reconciled and the first error (the pass goes on past a failed SKU).
    pub async fn reconcile_all<S: InventoryStore>(&self, store: &S) -> (usize, Option<ReconcileError>) {
        let batch = usize::try_from(self.config.reconcile_batch).unwrap_or(usize::MAX);
        let mut cursor = self.reconcile_cursor.load(Ordering::Relaxed);
        let (mut done, mut visited) = (0, 0);
        let mut first_error = None;
        loop {
            let scan = redis::cmd("SSCAN")
                .arg(self.registry_key())
                .arg(cursor)
                .arg("COUNT")
                .arg(batch.min(500))
                .to_owned();
            let (next, skus): (u64, Vec<String>) = match self.link.query(&scan, self.timeout()).await {
                Ok(page) => page,
                Err(error) => {
                    // Walk from the start next time: a cursor may not survive a Redis restart.
                    self.reconcile_cursor.store(0, Ordering::Relaxed);
                    return (done, first_error.or(Some(error.into())));
                }
            };
            for raw in skus {
                let Ok(sku) = SkuId::parse(raw) else { continue };
                // Failures count too: the bound is on the database reads a pass makes.
                visited += 1;
                match self.reconcile(store, &sku).await {
                    Ok(_) => done += 1,
                    Err(error) => {
                        first_error.get_or_insert(error);
                    }
                }
            }
            // A page may overshoot the batch by up to its size (SSCAN's COUNT is a hint).
            if next == 0 || visited >= batch {
                self.reconcile_cursor.store(next, Ordering::Relaxed);
                return (done, first_error);
            }
            cursor = next;
        }
    }

    /// Sets the counters of a catalog that has seen no traffic through the gate yet (a fresh
    /// deployment, a bulk import), without a database read per SKU: each counter is set only
    /// where none exists (`SET NX`), so a counter already in use is never overwritten.
    /// `available` must be the database's available units with nothing in flight. Up to
    /// `PRIME_IN_FLIGHT_MAX` calls are in flight at once.
    pub async fn prime(&self, skus: &[(SkuId, i64)]) -> Result<(), ReconcileError> {
        for chunk in skus.chunks(PRIME_IN_FLIGHT_MAX) {
            let mut calls = tokio::task::JoinSet::new();
            for (sku, available) in chunk {
                let command = redis::cmd("SET")
                    .arg(self.units_key(sku))
                    .arg(*available)
                    .arg("NX")
                    .to_owned();
                let (link, timeout) = (self.link.clone(), self.timeout());
                calls.spawn(async move { link.query::<Option<String>>(&command, timeout).await });
            }
            while let Some(done) = calls.join_next().await {
                done.map_err(|error| ReconcileError::Redis(error.to_string()))??;
            }
            let mut register = redis::cmd("SADD");
            register.arg(self.registry_key());
            for (sku, _) in chunk {
                register.arg(sku.as_str());
            }
            self.link.query::<i64>(&register, self.timeout()).await?;
        }
        Ok(())
    }

    /// Drops every counter and record of the gate's namespace that the reconciler knows of,
    /// and its list (the harness, after a run on a shared Redis).
    pub async fn forget_all(&self) -> Result<usize, ReconcileError> {
        let mut cursor: u64 = 0;
        let mut skus = Vec::new();
        loop {
            let scan = redis::cmd("SSCAN")
                .arg(self.registry_key())
                .arg(cursor)
                .arg("COUNT")
                .arg(1_000)
                .to_owned();
            let (next, page): (u64, Vec<String>) = self.link.query(&scan, self.timeout()).await?;
            skus.extend(page.into_iter().filter_map(|raw| SkuId::parse(raw).ok()));
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for chunk in skus.chunks(PRIME_IN_FLIGHT_MAX) {
            let mut calls = tokio::task::JoinSet::new();
            for sku in chunk {
                let command = redis::cmd("DEL")
                    .arg(self.units_key(sku))
                    .arg(self.in_flight_key(sku))
                    .arg(self.done_key(sku))
                    .to_owned();
                let (link, timeout) = (self.link.clone(), self.timeout());
                calls.spawn(async move { link.query::<i64>(&command, timeout).await });
            }
            while let Some(done) = calls.join_next().await {
                done.map_err(|error| ReconcileError::Redis(error.to_string()))??;
            }
        }
        let registry = redis::cmd("DEL").arg(self.registry_key()).to_owned();
        self.link.query::<i64>(&registry, self.timeout()).await?;
        Ok(skus.len())
    }

    /// Drops the SKU's counter and records, and takes it off the reconciler's list (tests,
    /// and operators resetting a SKU): the next admission warms the counter again.
    pub async fn forget(&self, sku: &SkuId) -> Result<(), ReconcileError> {
        let keys = redis::cmd("DEL")
            .arg(self.units_key(sku))
            .arg(self.in_flight_key(sku))
            .arg(self.done_key(sku))
            .to_owned();
        self.link.query::<i64>(&keys, self.timeout()).await?;
        // A separate command: on a cluster the registry lives in another slot.
        let registry = redis::cmd("SREM")
            .arg(self.registry_key())
            .arg(sku.as_str())
            .to_owned();
        self.link.query::<i64>(&registry, self.timeout()).await?;
        Ok(())
    }

    /// True when Redis answers a PING in time (readiness).
    pub async fn ping(&self) -> bool {
        let pong = self
            .link
            .query::<String>(&redis::cmd("PING"), self.timeout())
            .await;
        self.stats.saw(&pong);
        pong.is_ok()
    }
}
