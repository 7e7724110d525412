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
//!   undersell the reconciler already bounds, shorter than one interval. Nothing can be sold
//!   there meanwhile: the snapshot marks the SKU hinted in Redis, and a reconcile that raises
//!   the counter from 0 holds admissions until the mark expires (`scripts.rs`).
//! - So no key can commit through the gate meanwhile: the done hash is frozen. The
//!   snapshot holds its keys, and a client's key found there goes to Redis and on to the
//!   database as a replay. A SKU whose done hash is partial, or larger than
//!   [`HINT_KEYS_MAX`], keeps the hint for requests without a client key only (a key the
//!   server made cannot be a replay).
//! - A sale this instance made without a record (see `bypassed.rs`) drops the hint, and while
//!   one waits to be written no hint is used.

use std::collections::HashSet;
use std::time::Instant;

use stockguard_core::{IdempotencyKey, SkuId};

use crate::gate::Gate;
use crate::hints::{HINT_KEYS_MAX, Hint};
use crate::stats::GateStats;

impl Gate {
    /// Whether the SKU's fresh hint refuses a request with `client_key` (a key the client
    /// sent may be a replay). Never with the hint off or with sales waiting in `bypassed.rs`.
    pub(crate) fn refused_by_hint(&self, sku: &SkuId, client_key: Option<&IdempotencyKey>) -> bool {
        let ttl = self.config.sold_out_hint;
        if ttl.is_zero() || self.bypassed.is_pending() {
            return false;
        }
        let refused = self.hints.refuses(sku, client_key, ttl);
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
        // Taken lately: by a concurrent refusal, or fresh.
        if ttl.is_zero() || self.hints.has_younger_than(sku, ttl / 2) {
            return;
        }
        let taken_at = Instant::now();
        let generation = self.hints.generation();
        let mut invocation = self.scripts.sold_out.prepare_invoke();
        self.with_sku_keys(&mut invocation, sku)
            .key(self.hinted_key(sku))
            .arg(HINT_KEYS_MAX)
            .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let snapshot = self
            .link
            .invoke::<(i64, i64, i64, Vec<String>)>(&invocation, self.timeout())
            .await;
        self.stats.saw(&snapshot);
        let Ok((units, in_flight, complete, keys)) = snapshot else {
            return;
        };
        if units != 0 || in_flight != 0 || self.bypassed.is_pending() {
            return;
        }
        let done = (complete == 1).then(|| keys.into_iter().collect::<HashSet<_>>());
        if self.hints.keep(sku, Hint { taken_at, done }, generation, ttl) {
            GateStats::bump(&self.stats.hints_taken);
        }
    }
}
