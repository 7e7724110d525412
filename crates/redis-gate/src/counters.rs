//! The gate's counters against the database: reading them, recomputing them (warm-ups,
//! refreshes and the reconciler's passes), priming a fresh catalog, and forgetting them.

use std::sync::atomic::Ordering;

use stockguard_core::{COMMITTED_KEYS_MAX, IdempotencyKey, InventoryStore, LedgerPage, SkuId};

use crate::gate::{Gate, ReconcileError};
use crate::stats::GateStats;

/// Most `SET NX` calls [`Gate::prime`] keeps in flight.
pub const PRIME_IN_FLIGHT_MAX: usize = 1_000;

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

impl Gate {
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
        // A cold counter for a SKU with ledger rows: its done hash starts empty, so it is
        // partial for the replay window (the script marks it only if the counter is still
        // cold). One extra read, once per counter warm-up.
        let partial_ms = if self.counter(sku).await?.is_none() && self.has_history(store, sku).await? {
            u64::try_from(self.config.replay_window.as_millis()).unwrap_or(u64::MAX)
        } else {
            0
        };
        let mut invocation = self.scripts.reconcile.prepare_invoke();
        self.with_sku_keys(&mut invocation, sku)
            .key(self.hinted_key(sku))
            .key(self.hold_key(sku))
            .arg(available)
            .arg(partial_ms)
            .arg(committed.len());
        for key in committed.iter().chain(&stale) {
            invocation.arg(key.as_str());
        }
        let reconciled = self.link.invoke(&invocation, self.timeout()).await;
        self.stats.saw(&reconciled);
        let (before, after, in_flight): (i64, i64, i64) = reconciled?;
        // The counter may have been raised: a sold-out snapshot no longer holds.
        self.hints.forget(sku);
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

    /// Whether the SKU has any ledger row (a key a client could replay).
    async fn has_history<S: InventoryStore>(&self, store: &S, sku: &SkuId) -> Result<bool, ReconcileError> {
        let first = LedgerPage::first(1).expect("1 is a valid page size");
        store
            .ledger(sku, first)
            .await
            .map(|rows| !rows.is_empty())
            .map_err(ReconcileError::Database)
    }

    /// One reconcile pass: up to `reconcile_batch` SKUs from the list, starting where the last
    /// pass stopped (a pass that reaches the end starts over next time); returns how many
    /// were reconciled and the first error (the pass goes on past a failed SKU).
    pub async fn reconcile_all<S: InventoryStore>(&self, store: &S) -> (usize, Option<ReconcileError>) {
        // Sales made without a record while Redis was down go to the done hash first.
        if let Err(error) = self.flush_bypassed().await {
            return (0, Some(error.into()));
        }
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
                // A SKU left the scope (a restart with a narrower list): its counter is
                // not used, so it is not worth a database read.
                let Some(sku) = SkuId::parse(raw).ok().filter(|sku| self.covers(sku)) else {
                    continue;
                };
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
    /// `available` must be the database's available units with nothing in flight, and the
    /// SKUs must have no sales a client could still replay (their done hash starts empty and
    /// complete; a SKU with sales is warmed by [`Gate::reconcile`], which marks it partial). Up to
    /// `PRIME_IN_FLIGHT_MAX` calls are in flight at once. SKUs outside the scope are skipped.
    pub async fn prime(&self, skus: &[(SkuId, i64)]) -> Result<(), ReconcileError> {
        let covered: Vec<&(SkuId, i64)> = skus.iter().filter(|(sku, _)| self.covers(sku)).collect();
        for chunk in covered.chunks(PRIME_IN_FLIGHT_MAX) {
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
                let command = self.delete_keys_of(sku);
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
        self.link
            .query::<i64>(&self.delete_keys_of(sku), self.timeout())
            .await?;
        // A separate command: on a cluster the registry lives in another slot.
        let registry = redis::cmd("SREM")
            .arg(self.registry_key())
            .arg(sku.as_str())
            .to_owned();
        self.link.query::<i64>(&registry, self.timeout()).await?;
        Ok(())
    }
}
