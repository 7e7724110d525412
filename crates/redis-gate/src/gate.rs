//! The admission gate: per-SKU counters in Redis, checked and decremented atomically, with an
//! in-flight record under each admitted request's idempotency key until the database answers.
//!
//! The database stays the truth. The gate only decides which requests reach it: a refusal by
//! the gate is a definite "nothing changed", and an admitted request is still decided by the
//! engine. So the gate can never cause oversell; a counter that drifts low causes undersell
//! (refusals while the database has stock) until the reconciler recomputes it.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use stockguard_core::engine::UNAVAILABLE_RETRY_AFTER;
use stockguard_core::{DeductError, IdempotencyKey, InventoryStore, SkuId};

use crate::bypass_log::Bypassed;
use crate::config::{GateConfig, RedisDownPolicy};
use crate::hints::SoldOutHints;
use crate::link::{Link, LinkError};
use crate::scripts::Scripts;
use crate::stats::GateStats;

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
    /// Go to the database with no record: a key that committed through the gate before (so
    /// the database replays it even after sell-out), a SKU whose done hash is partial, or a
    /// SKU outside the scope. Nothing to finish.
    Pass,
    /// Go to the database with no record, where a commit would be one the done hash does not
    /// know: Redis down under fail-open, a counter that could not be warmed, or the key in
    /// flight for other units. [`Gate::finish_bypassed`] must be told how it ended, so that a
    /// later replay of the key is answered, not refused (see `bypassed.rs`).
    Bypassed,
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
    pub(crate) link: Link,
    pub(crate) config: GateConfig,
    pub(crate) scripts: Scripts,
    pub(crate) stats: GateStats,
    /// Where the next reconcile pass resumes its walk of the SKU list (an SSCAN cursor).
    pub(crate) reconcile_cursor: AtomicU64,
    /// Sales made without a record, until their keys are in the done hash.
    pub(crate) bypassed: Bypassed,
    /// Local sold-out snapshots (`sold_out.rs`).
    pub(crate) hints: SoldOutHints,
}

impl Gate {
    /// Checks the settings and reaches Redis once, to report whether it is up
    /// ([`GateStats::redis_up`]). A single node or a sentinel's primary that is down is not
    /// an error here: the gate starts, and applies the Redis-down policy until Redis answers.
    /// A malformed URL, bad settings, or a cluster with no reachable node are errors.
    pub async fn connect(config: GateConfig) -> Result<Self, DeductError> {
        config.validate()?;
        let link = Link::connect(&config.target, config.redis_timeout)
            .await
            .map_err(|error| DeductError::Unavailable {
                reason: "admission gate: redis unreachable",
                retry_after: UNAVAILABLE_RETRY_AFTER,
                source: Some(Box::new(error)),
            })?;
        let gate = Self {
            link,
            config,
            scripts: Scripts::new(),
            stats: GateStats::default(),
            reconcile_cursor: AtomicU64::new(0),
            bypassed: Bypassed::default(),
            hints: SoldOutHints::default(),
        };
        if !gate.ping().await {
            tracing::warn!(
                "admission gate: redis does not answer yet; the Redis-down policy applies until it does"
            );
        }
        Ok(gate)
    }

    /// The settings.
    pub fn config(&self) -> &GateConfig {
        &self.config
    }

    /// What the gate did so far.
    pub fn stats(&self) -> &GateStats {
        &self.stats
    }

    pub(crate) fn timeout(&self) -> Duration {
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

    /// The SKU's partial mark: while it exists, the done hash may lack keys committed before
    /// the counter was warmed (see `scripts.rs`).
    pub fn partial_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:partial", self.config.namespace, sku)
    }

    /// The SKU's hinted mark: while it exists, some instance may hold a sold-out hint for it.
    pub fn hinted_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:hinted", self.config.namespace, sku)
    }

    /// The SKU's hold: while it exists, a restock from zero is not admitted yet.
    pub fn hold_key(&self, sku: &SkuId) -> String {
        format!("{}:{{{}}}:hold", self.config.namespace, sku)
    }

    /// Adds the SKU's counter, in-flight, done and partial keys, in that order: the first
    /// four `KEYS` of the admission, reconcile and sold-out scripts.
    pub(crate) fn with_sku_keys<'a, 'script>(
        &self,
        invocation: &'a mut redis::ScriptInvocation<'script>,
        sku: &SkuId,
    ) -> &'a mut redis::ScriptInvocation<'script> {
        invocation
            .key(self.units_key(sku))
            .key(self.in_flight_key(sku))
            .key(self.done_key(sku))
            .key(self.partial_key(sku))
    }

    /// `DEL` of every key of the SKU (one slot).
    pub(crate) fn delete_keys_of(&self, sku: &SkuId) -> redis::Cmd {
        redis::cmd("DEL")
            .arg(self.units_key(sku))
            .arg(self.in_flight_key(sku))
            .arg(self.done_key(sku))
            .arg(self.partial_key(sku))
            .arg(self.hinted_key(sku))
            .arg(self.hold_key(sku))
            .to_owned()
    }

    /// The set of SKUs with a counter, which the reconciler walks.
    pub(crate) fn registry_key(&self) -> String {
        format!("{}:skus", self.config.namespace)
    }

    /// Whether `sku` goes through the gate (its [`GateScope`](crate::GateScope)).
    pub fn covers(&self, sku: &SkuId) -> bool {
        self.config.scope.covers(sku)
    }

    /// Admits `units` of `sku` under `key`, warming a cold counter from `store` first. A SKU
    /// outside the scope passes with no Redis call. `Err` only under fail-closed with Redis
    /// down (`Unavailable`, nothing changed).
    pub async fn admit<S: InventoryStore>(
        &self,
        store: &S,
        sku: &SkuId,
        key: &IdempotencyKey,
        units: i64,
    ) -> Result<Admission, DeductError> {
        if !self.covers(sku) {
            GateStats::bump(&self.stats.ungated);
            return Ok(Admission::Pass);
        }
        // Sales made without a record reach the done hash before anything is refused.
        if let Err(error) = self.flush_bypassed().await {
            return self.redis_down(error);
        }
        match self.try_admit(store, sku, key, units).await {
            Ok(Some(admission)) => Ok(admission),
            // Cold: compute the counter from the database, then try once more.
            Ok(None) => match self.reconcile(store, sku).await {
                Ok(_) => match self.try_admit(store, sku, key, units).await {
                    Ok(Some(admission)) => Ok(admission),
                    Ok(None) => Ok(self.bypass()),
                    Err(error) => self.redis_down(error),
                },
                Err(ReconcileError::Database(_)) => Ok(self.bypass()),
                Err(ReconcileError::Redis(reason)) => {
                    tracing::warn!(%sku, %reason, "admission gate: warm-up failed");
                    self.redis_down(LinkError::TimedOut)
                }
            },
            Err(error) => self.redis_down(error),
        }
    }

    /// One run of the admission script: `None` when the counter is cold. A short counter
    /// whose done hash is partial refuses only a key the database does not have: one that it
    /// has is a replay, which goes to the database (and so does a key whose lookup fails).
    async fn try_admit<S: InventoryStore>(
        &self,
        store: &S,
        sku: &SkuId,
        key: &IdempotencyKey,
        units: i64,
    ) -> Result<Option<Admission>, LinkError> {
        let mut invocation = self.scripts.admit.prepare_invoke();
        self.with_sku_keys(&mut invocation, sku)
            .key(self.hold_key(sku))
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
            // A restock from zero, held until every sold-out hint has expired.
            7 => {
                GateStats::bump(&self.stats.refused);
                GateStats::bump(&self.stats.refused_held);
                Some(Admission::Refused { available: 0 })
            }
            3 => None,
            6 => {
                GateStats::bump(&self.stats.replay_lookups);
                match store.committed_keys(std::slice::from_ref(key)).await {
                    Ok(found) if found.is_empty() => {
                        GateStats::bump(&self.stats.refused);
                        Some(Admission::Refused { available: left })
                    }
                    _ => Some(self.pass()),
                }
            }
            5 => Some(self.pass()),
            _ => Some(self.bypass()),
        })
    }

    fn pass(&self) -> Admission {
        GateStats::bump(&self.stats.passed);
        Admission::Pass
    }

    fn bypass(&self) -> Admission {
        GateStats::bump(&self.stats.passed);
        GateStats::bump(&self.stats.bypassed);
        Admission::Bypassed
    }

    /// Applies the Redis-down policy after a failed call.
    fn redis_down(&self, error: LinkError) -> Result<Admission, DeductError> {
        GateStats::bump(&self.stats.redis_errors);
        match self.config.when_down {
            RedisDownPolicy::FailOpen => {
                tracing::debug!(%error, "admission gate: redis down, going to the database");
                Ok(self.bypass())
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
                    .key(self.partial_key(sku))
                    .arg(key.as_str())
                    .arg(self.config.done_max)
                    .arg(u64::try_from(self.config.replay_window.as_millis()).unwrap_or(u64::MAX));
                let settled = self.link.invoke::<i64>(&invocation, self.timeout()).await;
                settled.map(|status| {
                    GateStats::bump(&self.stats.settled);
                    if status == 2 {
                        GateStats::bump(&self.stats.done_trims);
                    }
                })
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
