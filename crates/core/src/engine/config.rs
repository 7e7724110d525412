//! The engine's limits, explicit.

use std::time::Duration;

use super::recent_keys::RECENT_KEYS_MAX;
use crate::coalesce::CoalescerConfig;
use crate::error::InvalidInput;
use crate::retry::RetryPolicy;
use crate::sharding;

/// Longest accepted overall deadline: a request that may hold a row lock must not be allowed
/// to run for minutes.
pub const DEADLINE_MAX: Duration = Duration::from_secs(300);

/// Everything the engine decides with, shared by every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// One bound on a whole call: every attempt, backoff, and the resolution of a lost
    /// answer happen within it. Past it, a call that sent nothing that could commit is
    /// `Unavailable`, and one that did is `OutcomeUnknown`. Keep it below the HTTP request
    /// timeout so the engine, not the HTTP layer, gives the answer.
    pub deadline: Duration,
    /// Retries for version misses, deadlocks, serialization failures and lost connections.
    /// Its `max_elapsed` is capped by `deadline`.
    pub retry: RetryPolicy,
    /// Group-commit limits for `Coalesced`.
    pub coalescer: CoalescerConfig,
    /// Buckets a SKU's stock is spread over by `Sharded` (1..=`SHARD_BUCKETS_MAX`).
    pub shard_buckets: u32,
    /// `Sharded` spreads a SKU on its first deduction instead of the first time a deduction
    /// finds the SKU's row busy. For SKUs known to be hot before the sale starts.
    pub spread_eagerly: bool,
    /// Client keys of committed deductions kept in memory (0..=`RECENT_KEYS_MAX`), so that
    /// a client's retry is answered without the database and a batch writes its keys
    /// without looking them up first. 0 turns the memory off: every batch then writes
    /// blind and a retry costs a refused write and a lookup. See `recent_keys.rs`.
    pub recent_keys_max: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(8),
            retry: RetryPolicy::default(),
            coalescer: CoalescerConfig::default(),
            shard_buckets: sharding::DEFAULT_SHARD_BUCKETS,
            spread_eagerly: false,
            recent_keys_max: 8192,
        }
    }
}

impl EngineConfig {
    /// Checks every limit; called when a store is opened.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        sharding::check_bucket_count(self.shard_buckets)?;
        if self.deadline.is_zero() || self.deadline > DEADLINE_MAX {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "deadline_ms",
                given: u64::try_from(self.deadline.as_millis()).unwrap_or(u64::MAX),
                min: 1,
                max: u64::try_from(DEADLINE_MAX.as_millis()).unwrap_or(u64::MAX),
            });
        }
        if self.recent_keys_max > RECENT_KEYS_MAX {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "recent_keys_max",
                given: u64::try_from(self.recent_keys_max).unwrap_or(u64::MAX),
                min: 0,
                max: RECENT_KEYS_MAX as u64,
            });
        }
        self.coalescer.validate()
    }
}
