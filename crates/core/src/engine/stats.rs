//! Counters that explain a bad day: retries by cause, lost answers and how they were
//! resolved, `OutcomeUnknown` answers, and how long calls waited for a pooled connection.
//! Cheap atomics, read by the service's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::error::RetryCause;

/// How a lost answer was resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// The key's ledger row was found: the change committed.
    Committed,
    /// The key was absent after the locks settled: nothing committed; the call went on.
    NotApplied,
    /// The lookup itself failed in time: the answer is `OutcomeUnknown`.
    Unknown,
}

impl Resolution {
    /// Every resolution, in a stable order.
    pub const ALL: [Resolution; 3] = [Resolution::Committed, Resolution::NotApplied, Resolution::Unknown];

    /// A stable snake_case name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Committed => "committed",
            Resolution::NotApplied => "not_applied",
            Resolution::Unknown => "unknown",
        }
    }
}

/// The engine's counters.
#[derive(Debug, Default)]
pub struct EngineStats {
    retries: [AtomicU64; RetryCause::ALL.len()],
    resolutions: [AtomicU64; Resolution::ALL.len()],
    outcome_unknown: AtomicU64,
    deadline_exceeded: AtomicU64,
    replayed_from_memory: AtomicU64,
    holds_expired: [AtomicU64; ExpiredBy::ALL.len()],
}

/// Who wrote a hold's expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiredBy {
    /// The sweeper (the service's background task, or `stockguard holds sweep`).
    Sweeper,
    /// A change about to be refused for want of units that due holds still held.
    Refusal,
}

impl ExpiredBy {
    /// Every source, in metric order.
    pub const ALL: [ExpiredBy; 2] = [ExpiredBy::Sweeper, ExpiredBy::Refusal];

    /// A stable snake_case name for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ExpiredBy::Sweeper => "sweeper",
            ExpiredBy::Refusal => "refusal",
        }
    }
}

impl EngineStats {
    pub(crate) fn retried(&self, cause: RetryCause) {
        if let Some(index) = RetryCause::ALL.iter().position(|c| *c == cause) {
            self.retries[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn resolved(&self, resolution: Resolution) {
        if let Some(index) = Resolution::ALL.iter().position(|r| *r == resolution) {
            self.resolutions[index].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn replayed_from_memory(&self) {
        self.replayed_from_memory.fetch_add(1, Ordering::Relaxed);
    }

    /// Client retries answered from the engine's memory of recent keys, without the
    /// database.
    pub fn replays_from_memory(&self) -> u64 {
        self.replayed_from_memory.load(Ordering::Relaxed)
    }

    pub(crate) fn answered_unknown(&self) {
        self.outcome_unknown.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn expired_holds(&self, by: ExpiredBy, holds: usize) {
        let index = ExpiredBy::ALL.iter().position(|b| *b == by).unwrap_or(0);
        self.holds_expired[index].fetch_add(holds as u64, Ordering::Relaxed);
    }

    /// Holds expired, by who wrote the expiry.
    pub fn holds_expired(&self) -> impl Iterator<Item = (ExpiredBy, u64)> + '_ {
        ExpiredBy::ALL
            .iter()
            .zip(&self.holds_expired)
            .map(|(by, count)| (*by, count.load(Ordering::Relaxed)))
    }

    pub(crate) fn deadline_passed(&self) {
        self.deadline_exceeded.fetch_add(1, Ordering::Relaxed);
    }

    /// Retries so far, per cause.
    pub fn retries(&self) -> impl Iterator<Item = (RetryCause, u64)> + '_ {
        RetryCause::ALL
            .iter()
            .zip(&self.retries)
            .map(|(cause, count)| (*cause, count.load(Ordering::Relaxed)))
    }

    /// Lost answers resolved so far, per result.
    pub fn resolutions(&self) -> impl Iterator<Item = (Resolution, u64)> + '_ {
        Resolution::ALL
            .iter()
            .zip(&self.resolutions)
            .map(|(resolution, count)| (*resolution, count.load(Ordering::Relaxed)))
    }

    /// `OutcomeUnknown` answers so far.
    pub fn outcome_unknown(&self) -> u64 {
        self.outcome_unknown.load(Ordering::Relaxed)
    }

    /// Calls that hit their deadline so far.
    pub fn deadline_exceeded(&self) -> u64 {
        self.deadline_exceeded.load(Ordering::Relaxed)
    }
}

/// Upper bounds, in microseconds, of the pool-wait histogram's buckets (the last bucket is
/// +Inf). From a free connection (tens of µs) up to past any sane acquire timeout, so a
/// saturated pool shows as mass in the top buckets rather than vanishing into +Inf.
pub const POOL_WAIT_BUCKETS_US: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
    2_500_000, 5_000_000,
];

/// How long calls waited for a pooled connection: a histogram over [`POOL_WAIT_BUCKETS_US`].
///
/// Recorded on every acquire, so it stays on the hot path's budget: one bucket and the sum
/// are bumped (two relaxed atomic adds); the cumulative counts Prometheus wants are summed
/// at scrape time instead.
#[derive(Debug, Default)]
pub struct PoolWaitStats {
    /// `buckets[i]` counts waits in `(POOL_WAIT_BUCKETS_US[i-1], POOL_WAIT_BUCKETS_US[i]]`;
    /// the last slot counts waits above every bound.
    buckets: [AtomicU64; POOL_WAIT_BUCKETS_US.len() + 1],
    sum_us: AtomicU64,
}

impl PoolWaitStats {
    /// Records one wait, whether it ended with a connection, an error or a cancelled call.
    pub fn observe(&self, waited: Duration) {
        let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
        let index = POOL_WAIT_BUCKETS_US.partition_point(|bound| *bound < micros);
        self.buckets[index].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    /// Cumulative counts per bound, in seconds, as Prometheus buckets (`le`), +Inf last
    /// (`None`). Read bucket by bucket while calls go on, so a scrape may be a few waits
    /// behind; the counts stay monotonic.
    pub fn cumulative_seconds(&self) -> Vec<(Option<f64>, u64)> {
        let mut total = 0_u64;
        let bounds = POOL_WAIT_BUCKETS_US
            .iter()
            .map(|us| Some(Duration::from_micros(*us).as_secs_f64()))
            .chain(std::iter::once(None));
        bounds
            .zip(&self.buckets)
            .map(|(bound, bucket)| {
                total += bucket.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect()
    }

    /// Every wait so far, in seconds.
    pub fn sum_seconds(&self) -> f64 {
        Duration::from_micros(self.sum_us.load(Ordering::Relaxed)).as_secs_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_waits_land_in_their_bucket_and_accumulate() {
        let stats = PoolWaitStats::default();
        stats.observe(Duration::from_micros(50)); // on the first bound: le="0.00005"
        stats.observe(Duration::from_micros(51));
        stats.observe(Duration::from_millis(3));
        stats.observe(Duration::from_secs(60)); // past every bound: +Inf only
        let buckets = stats.cumulative_seconds();
        assert_eq!(buckets.len(), POOL_WAIT_BUCKETS_US.len() + 1);
        assert_eq!(buckets[0], (Some(0.000_05), 1));
        assert_eq!(buckets[1], (Some(0.000_1), 2));
        assert_eq!(buckets[5], (Some(0.002_5), 2));
        assert_eq!(buckets[6], (Some(0.005), 3));
        assert_eq!(buckets[POOL_WAIT_BUCKETS_US.len() - 1], (Some(5.0), 3));
        assert_eq!(buckets[POOL_WAIT_BUCKETS_US.len()], (None, 4));
        assert!((stats.sum_seconds() - 60.003_101).abs() < 1e-9);
    }
}
