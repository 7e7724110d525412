//! What the gate did, as monotonic counters (for /metrics and the harness).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Counters since the gate started. Read with [`GateStats::get`].
#[derive(Debug, Default)]
pub struct GateStats {
    /// Admissions that decremented a counter.
    pub admitted: AtomicU64,
    /// Requests refused by the gate: the database was never touched.
    pub refused: AtomicU64,
    /// Requests sent to the database without a record: Redis down (fail open), a SKU the
    /// database does not know, a key in flight for other units, or a replay of a key that
    /// committed through the gate.
    pub passed: AtomicU64,
    /// Lines of SKUs outside the gate's scope, sent straight to the database without a Redis
    /// call.
    pub ungated: AtomicU64,
    /// Done hashes dropped at their bound (`done_max`), their SKUs marked partial.
    pub done_trims: AtomicU64,
    /// Short admissions checked against the database because the SKU's done hash was partial.
    pub replay_lookups: AtomicU64,
    /// Redis calls that failed or timed out.
    pub redis_errors: AtomicU64,
    /// Records removed after a commit (units stay taken).
    pub settled: AtomicU64,
    /// Records removed after a definite refusal or a replay (units given back).
    pub given_back: AtomicU64,
    /// Records kept because the database's answer was `outcome_unknown`.
    pub kept_unknown: AtomicU64,
    /// Counters computed from the database (warm-ups and reconciles).
    pub reconciled: AtomicU64,
    /// Σ |counter before − counter after| over reconciles of a warm counter: the drift fixed.
    pub drift_units: AtomicU64,
    /// In-flight records the reconciler found committed and dropped.
    pub resolved_committed: AtomicU64,
    /// In-flight records older than the grace whose key the database did not know: dropped,
    /// their units back in the counter.
    pub resolved_stale: AtomicU64,
    /// Lines sent to the database without a record because Redis did not answer (fail open),
    /// the counter could not be warmed, or the key was in flight for other units: their
    /// outcome is kept until Redis answers.
    pub bypassed: AtomicU64,
    /// Keys of sales made without a record, written to the done hash once Redis answered.
    pub bypass_recorded: AtomicU64,
    /// SKUs marked partial because a sale made without a record had an unknown outcome, or
    /// too many waited ([`BYPASSED_KEYS_MAX`](crate::BYPASSED_KEYS_MAX)).
    pub bypass_partial_marks: AtomicU64,
    /// Refusals answered by the local sold-out hint, without a Redis call (counted in
    /// `refused` too).
    pub refused_by_hint: AtomicU64,
    /// Sold-out snapshots kept as hints.
    pub hints_taken: AtomicU64,
    /// Admissions refused because a restock from zero was held until every sold-out hint had
    /// expired (counted in `refused` too).
    pub refused_held: AtomicU64,
    /// Requests refused with 503 because Redis was down and the policy is fail closed.
    pub refused_redis_down: AtomicU64,
    /// Whether the last Redis call of a request, a reconcile or a ping failed.
    last_call_failed: AtomicBool,
}

impl GateStats {
    /// Reads one counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// True when the gate's last Redis call succeeded (and before any call).
    pub fn redis_up(&self) -> bool {
        !self.last_call_failed.load(Ordering::Relaxed)
    }

    pub(crate) fn saw<T, E>(&self, result: &Result<T, E>) {
        self.last_call_failed.store(result.is_err(), Ordering::Relaxed);
    }

    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}
