//! The local sold-out hint: after Redis refuses a SKU whose counter is 0 with nothing in
//! flight, the gate keeps a snapshot of that state for `sold_out_hint` (default 100 ms) and
//! refuses the SKU's next requests without a Redis call. This is what lets refusals after
//! sell-out flow at the speed of the service itself.
//!
//! Why a refusal from the snapshot is as true as one from Redis:
//! - With the counter at 0 and no record in flight, no admission can succeed and no give-back
//!   can raise the counter. Only a reconcile (a restock, an adjustment, a release, drift
//!   fixed) can, and the gate drops its hint whenever it reconciles the SKU itself. A counter
//!   raised by another instance is seen once the hint expires: the same kind of short
//!   undersell the reconciler already bounds, shorter than one interval.
//! - No key can commit through the gate meanwhile, so the done hash is frozen. The snapshot
//!   holds its keys, and a client's key found there goes to Redis and on to the database as
//!   a replay. A SKU whose done hash is partial, or larger than [`HINT_KEYS_MAX`], keeps the
//!   hint for requests without a client key only (a key the server made cannot be a replay).
//! - A sale this instance made without a record (see `bypassed.rs`) drops the hint, and while
//!   one waits to be written no hint is used.

use std::collections::{HashMap, HashSet};
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use stockguard_core::{IdempotencyKey, SkuId};

use crate::gate::Gate;
use crate::stats::GateStats;

/// Most done keys a snapshot carries; past it, only requests without a client key use it.
pub const HINT_KEYS_MAX: usize = 10_000;
/// Most SKUs with a hint at once (expired ones are dropped to make room).
pub const HINTED_SKUS_MAX: usize = 10_000;

/// One SKU's sold-out snapshot.
#[derive(Debug)]
struct Hint {
    taken_at: Instant,
    /// The done hash's keys, or `None` when it is partial or too large.
    done: Option<HashSet<String>>,
}

/// The hints of one gate.
#[derive(Debug, Default)]
pub(crate) struct SoldOutHints {
    hints: RwLock<HashMap<SkuId, Hint>>,
    /// Bumped by every [`SoldOutHints::forget`]: a snapshot taken across one is not kept,
    /// since the counter may have been raised after Redis answered it.
    generation: AtomicU64,
}

impl SoldOutHints {
    /// Drops the SKU's hint (its counter may have been raised).
    pub(crate) fn forget(&self, sku: &SkuId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        let mut hints = self
            .hints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        hints.remove(sku);
    }
}

impl Gate {
    /// Whether the SKU's fresh hint refuses `key`: `client_key` says the client sent it (so
    /// it may be a replay). Never with the hint off or with sales waiting in `bypassed.rs`.
    pub(crate) fn refused_by_hint(&self, sku: &SkuId, key: &IdempotencyKey, client_key: bool) -> bool {
        let ttl = self.config.sold_out_hint;
        if ttl.is_zero() || self.bypassed_pending() {
            return false;
        }
        let hints = self
            .hints
            .hints
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(hint) = hints.get(sku) else { return false };
        if hint.taken_at.elapsed() >= ttl {
            return false;
        }
        let refused = match (&hint.done, client_key) {
            (_, false) => true,
            (Some(done), true) => !done.contains(key.as_str()),
            (None, true) => false,
        };
        if refused {
            GateStats::bump(&self.stats.refused);
            GateStats::bump(&self.stats.refused_by_hint);
        }
        refused
    }

    /// After Redis refused the SKU with its counter at 0: takes a snapshot, unless a fresh
    /// one exists, and keeps it when the counter is still 0 with nothing in flight. A failure
    /// only means no hint.
    pub(crate) async fn take_hint(&self, sku: &SkuId) {
        let ttl = self.config.sold_out_hint;
        if ttl.is_zero() {
            return;
        }
        {
            let hints = self
                .hints
                .hints
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Taken lately: by a concurrent refusal, or fresh.
            if hints
                .get(sku)
                .is_some_and(|hint| hint.taken_at.elapsed() < ttl / 2)
            {
                return;
            }
        }
        let taken_at = Instant::now();
        let generation = self.hints.generation.load(Ordering::Acquire);
        let mut invocation = self.scripts.sold_out.prepare_invoke();
        invocation
            .key(self.units_key(sku))
            .key(self.in_flight_key(sku))
            .key(self.done_key(sku))
            .key(self.partial_key(sku))
            .arg(HINT_KEYS_MAX);
        let snapshot = self
            .link
            .invoke::<(i64, i64, i64, Vec<String>)>(&invocation, self.timeout())
            .await;
        self.stats.saw(&snapshot);
        let Ok((units, in_flight, complete, keys)) = snapshot else {
            return;
        };
        if units != 0 || in_flight != 0 || self.bypassed_pending() {
            return;
        }
        let done = (complete == 1).then(|| keys.into_iter().collect::<HashSet<_>>());
        let mut hints = self
            .hints
            .hints
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.hints.generation.load(Ordering::Acquire) != generation {
            return;
        }
        if hints.len() >= HINTED_SKUS_MAX && !hints.contains_key(sku) {
            hints.retain(|_, hint| hint.taken_at.elapsed() < ttl);
            if hints.len() >= HINTED_SKUS_MAX {
                return;
            }
        }
        hints.insert(sku.clone(), Hint { taken_at, done });
        GateStats::bump(&self.stats.hints_taken);
    }

    fn bypassed_pending(&self) -> bool {
        self.bypassed.is_pending()
    }
}
