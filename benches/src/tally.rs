//! What the requesters observed: outcomes, latencies, per-SKU sums. The audit compares the
//! per-SKU sums with what the database holds.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// A successful deduction counts as conflicted when it needed more than one attempt or
/// waited at least this long for the right to change the row (`Receipt::lock_wait_us`).
pub const CONFLICT_WAIT_THRESHOLD_US: u64 = 1_000;
/// Highest latency the histograms track: anything slower is clamped to it.
pub const LATENCY_MAX_US: u64 = 120_000_000;

/// Error kinds that mean the harness can no longer vouch for its tally or for the code under
/// test, so any one of them fails the run (exit status non-zero):
/// - `internal`: a guard fired inside the database or the library hit a bug;
/// - `http_unexpected`: the service answered something the API does not promise for a
///   deduction (wrong status, unparsable body, a receipt for another SKU or quantity);
/// - `http_transport`: the request failed on the wire or timed out, so whether the deduction
///   committed is unknown;
/// - `replay_not_honoured`: a retry of a committed request was not answered with the stored
///   receipt (it applied again, or was refused as if new);
/// - `unexpected_replay`: a request with a fresh key was answered as a replay.
pub const FATAL_ERROR_KINDS: [&str; 5] = [
    "internal",
    "http_unexpected",
    "http_transport",
    "replay_not_honoured",
    "unexpected_replay",
];

/// True when an error of this kind must fail the run (see [`FATAL_ERROR_KINDS`]).
pub fn is_fatal_error_kind(kind: &str) -> bool {
    FATAL_ERROR_KINDS.contains(&kind)
}

/// The outcome of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The deduction committed (as far as the caller was told).
    Success {
        /// Attempts made (retries after version misses or deadlocks).
        attempts: u32,
        /// Time spent waiting for the row (lock statement, or coalescing queue + lock).
        lock_wait_us: u64,
    },
    /// Refused for insufficient stock: nothing changed.
    Refused,
    /// The request's key was committed before: answered with the stored receipt, nothing
    /// changed.
    Replayed,
    /// Failed with an error of this kind (`DeductError::kind()` or a raw-SQL equivalent).
    Error {
        /// The error kind.
        kind: &'static str,
        /// Attempts made before giving up, when the error reports it (`Conflict`).
        attempts: u32,
    },
}

/// Per-SKU figures the audit reconciles.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SkuTally {
    /// Units of the successful deductions.
    pub units_deducted: i64,
    /// Successful deductions.
    pub successes: u64,
    /// Smallest quantity refused for insufficient stock, if any was.
    pub smallest_refused: Option<u32>,
}

/// One requester's (or, merged, one run's) observations.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Latency of successful deductions, in microseconds.
    pub success_latency_us: Histogram<u64>,
    /// Successful deductions.
    pub successes: u64,
    /// Refusals for insufficient stock.
    pub refused: u64,
    /// Retries answered with the stored receipt of a committed deduction.
    pub replayed: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Σ attempts over successful deductions.
    pub success_attempts: u64,
    /// Successes that needed more than one attempt.
    pub retried_successes: u64,
    /// Successes that waited ≥ [`CONFLICT_WAIT_THRESHOLD_US`] for the row.
    pub waited_successes: u64,
    /// Successes that count as conflicted (retried or waited).
    pub conflicted_successes: u64,
    /// Failed attempts: Σ (attempts − 1) over successes plus the attempts of `conflict` errors.
    pub failed_attempts: u64,
    /// Time since the run started of the last successful deduction.
    pub last_success_at: Duration,
    /// Per SKU index.
    pub per_sku: HashMap<usize, SkuTally>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            success_latency_us: Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)
                .expect("valid histogram bounds"),
            successes: 0,
            refused: 0,
            replayed: 0,
            errors: BTreeMap::new(),
            success_attempts: 0,
            retried_successes: 0,
            waited_successes: 0,
            conflicted_successes: 0,
            failed_attempts: 0,
            last_success_at: Duration::ZERO,
            per_sku: HashMap::new(),
        }
    }
}

impl Tally {
    /// Records one request's outcome.
    pub fn record(
        &mut self,
        sku_index: usize,
        units: u32,
        outcome: Outcome,
        latency: Duration,
        at: Duration,
    ) {
        match outcome {
            Outcome::Success {
                attempts,
                lock_wait_us,
            } => {
                let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.success_latency_us
                    .saturating_record(latency_us.clamp(1, LATENCY_MAX_US));
                self.successes += 1;
                self.success_attempts += u64::from(attempts.max(1));
                self.failed_attempts += u64::from(attempts.saturating_sub(1));
                let retried = attempts > 1;
                let waited = lock_wait_us >= CONFLICT_WAIT_THRESHOLD_US;
                self.retried_successes += u64::from(retried);
                self.waited_successes += u64::from(waited);
                self.conflicted_successes += u64::from(retried || waited);
                self.last_success_at = self.last_success_at.max(at);
                let sku = self.per_sku.entry(sku_index).or_default();
                sku.units_deducted += i64::from(units);
                sku.successes += 1;
            }
            Outcome::Refused => {
                self.refused += 1;
                let sku = self.per_sku.entry(sku_index).or_default();
                sku.smallest_refused = Some(sku.smallest_refused.map_or(units, |s| s.min(units)));
            }
            Outcome::Replayed => self.replayed += 1,
            Outcome::Error { kind, attempts } => {
                *self.errors.entry(kind).or_default() += 1;
                if kind == "conflict" {
                    self.failed_attempts += u64::from(attempts);
                }
            }
        }
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: Tally) {
        self.success_latency_us
            .add(&other.success_latency_us)
            .expect("histograms share bounds");
        self.successes += other.successes;
        self.refused += other.refused;
        self.replayed += other.replayed;
        for (kind, count) in other.errors {
            *self.errors.entry(kind).or_default() += count;
        }
        self.success_attempts += other.success_attempts;
        self.retried_successes += other.retried_successes;
        self.waited_successes += other.waited_successes;
        self.conflicted_successes += other.conflicted_successes;
        self.failed_attempts += other.failed_attempts;
        self.last_success_at = self.last_success_at.max(other.last_success_at);
        for (index, theirs) in other.per_sku {
            let ours = self.per_sku.entry(index).or_default();
            ours.units_deducted += theirs.units_deducted;
            ours.successes += theirs.successes;
            ours.smallest_refused = match (ours.smallest_refused, theirs.smallest_refused) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }

    /// Requests that failed because of contention: gave up retrying (`conflict`), or were
    /// not granted the lock in time (`lock_timeout`, including `NoWait`'s immediate refusal).
    pub fn contention_failures(&self) -> u64 {
        ["conflict", "lock_timeout", "deadlock"]
            .iter()
            .map(|kind| self.errors.get(kind).copied().unwrap_or(0))
            .sum()
    }

    /// The measured conflict rate: of the deductions that got a decision or failed on
    /// contention, the fraction that met contention (retried, waited ≥ 1 ms on the row, or
    /// failed on contention). Refusals are left out: they carry no receipt to measure.
    pub fn conflict_rate(&self) -> f64 {
        let contended = self.conflicted_successes + self.contention_failures();
        let total = self.successes + self.contention_failures();
        if total == 0 {
            0.0
        } else {
            contended as f64 / total as f64
        }
    }

    /// Fraction of attempts that failed a version check or hit a deadlock and were retried.
    /// Every success has exactly one successful attempt, so attempts = successes + failed.
    pub fn failed_attempt_rate(&self) -> f64 {
        let attempts = self.successes + self.failed_attempts;
        if attempts == 0 {
            0.0
        } else {
            self.failed_attempts as f64 / attempts as f64
        }
    }

    /// Mean attempts per successful deduction.
    pub fn attempts_per_success(&self) -> f64 {
        if self.successes == 0 {
            0.0
        } else {
            self.success_attempts as f64 / self.successes as f64
        }
    }

    /// Total errors.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_rate_counts_retries_waits_and_contention_failures() {
        let mut tally = Tally::default();
        let at = Duration::from_millis(5);
        let quick = Duration::from_micros(300);
        tally.record(
            0,
            1,
            Outcome::Success {
                attempts: 1,
                lock_wait_us: 10,
            },
            quick,
            at,
        );
        tally.record(
            0,
            1,
            Outcome::Success {
                attempts: 3,
                lock_wait_us: 10,
            },
            quick,
            at,
        );
        tally.record(
            1,
            2,
            Outcome::Success {
                attempts: 1,
                lock_wait_us: 5_000,
            },
            quick,
            at,
        );
        tally.record(1, 4, Outcome::Refused, quick, at);
        tally.record(1, 3, Outcome::Refused, quick, at);
        tally.record(
            0,
            1,
            Outcome::Error {
                kind: "conflict",
                attempts: 10,
            },
            quick,
            at,
        );
        assert_eq!(tally.successes, 3);
        assert_eq!(tally.conflicted_successes, 2);
        // (2 conflicted successes + 1 conflict failure) / (3 successes + 1 failure)
        assert!((tally.conflict_rate() - 0.75).abs() < 1e-12);
        // failed attempts: 2 (from the 3-attempt success) + 10 (the conflict) = 12 of 15 attempts.
        assert_eq!(tally.failed_attempts, 12);
        assert!((tally.failed_attempt_rate() - 12.0 / 15.0).abs() < 1e-12);
        assert_eq!(tally.per_sku[&1].smallest_refused, Some(3));
        assert_eq!(tally.per_sku[&1].units_deducted, 2);

        let mut merged = Tally::default();
        let mut other = Tally::default();
        other.record(1, 2, Outcome::Refused, quick, at);
        merged.merge(tally);
        merged.merge(other);
        assert_eq!(merged.per_sku[&1].smallest_refused, Some(2));
        assert_eq!(merged.success_latency_us.len(), 3);
    }
}
