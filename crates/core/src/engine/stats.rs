//! Counters that explain a bad day: retries by cause, lost answers and how they were
//! resolved, and `OutcomeUnknown` answers. Cheap atomics, read by the service's `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

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

    pub(crate) fn answered_unknown(&self) {
        self.outcome_unknown.fetch_add(1, Ordering::Relaxed);
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
