//! The gate's settings, each with its bound.

use std::time::Duration;

use stockguard_core::InvalidInput;

use crate::link::RedisTarget;
use crate::scope::GateScope;

/// What the gate does when Redis cannot be reached or does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RedisDownPolicy {
    /// Go straight to the database, which stays correct, only slower (the default).
    #[default]
    FailOpen,
    /// Refuse with `Unavailable` (HTTP 503): nothing is sent to the database.
    FailClosed,
}

/// Longest accepted wait for one Redis call.
pub const REDIS_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// Longest accepted grace for an in-flight record whose key the database does not know.
pub const UNKNOWN_GRACE_MAX: Duration = Duration::from_secs(3_600);
/// Longest accepted reconcile interval.
pub const RECONCILE_INTERVAL_MAX: Duration = Duration::from_secs(3_600);
/// Most SKUs one reconcile pass may recompute.
pub const RECONCILE_BATCH_MAX: u32 = 100_000;
/// Shortest and longest accepted replay window.
pub const REPLAY_WINDOW_MIN: Duration = Duration::from_secs(1);
/// See [`REPLAY_WINDOW_MIN`].
pub const REPLAY_WINDOW_MAX: Duration = Duration::from_secs(30 * 24 * 3_600);
/// Most keys a done hash may be allowed to hold.
pub const DONE_MAX_LIMIT: u32 = 10_000_000;
/// Longest accepted sold-out hint.
pub const SOLD_OUT_HINT_MAX: Duration = Duration::from_secs(10);
/// Longest accepted key namespace.
pub const NAMESPACE_MAX_LEN: usize = 32;

/// How the gate reaches Redis and how it behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateConfig {
    /// Where Redis is.
    pub target: RedisTarget,
    /// Prefix of every key the gate writes, so that several stockguard deployments (or
    /// tests) can share one Redis: `<namespace>:{<sku>}:units`.
    pub namespace: String,
    /// Bound on each Redis call (and on connecting).
    pub redis_timeout: Duration,
    /// What a request does when Redis is down.
    pub when_down: RedisDownPolicy,
    /// How old an in-flight record must be before the reconciler, not finding its key in the
    /// database, drops it as never committed. Must exceed the engine's deadline, the longest
    /// a call that could still commit can run.
    pub unknown_grace: Duration,
    /// How often the background reconciler runs a pass.
    pub reconcile_interval: Duration,
    /// Most SKUs one pass recomputes (each costs a stock read in the database); the next
    /// pass goes on where this one stopped, so every counter is visited within
    /// ⌈SKUs / batch⌉ intervals.
    pub reconcile_batch: u32,
    /// The SKUs that go through the gate; the others go straight to the database.
    pub scope: GateScope,
    /// How long a client may retry a key after it committed, for the gate's purpose: a
    /// counter warmed for a SKU that already has ledger rows (a new deployment, or Redis lost
    /// its data) checks a short admission's key against the database for this long, so that
    /// a replay of a key the done hash never saw is still answered, not refused.
    pub replay_window: Duration,
    /// Most keys one SKU's done hash holds (about 60 bytes each). Past it, the hash is dropped
    /// and the SKU marked partial for the replay window: its short admissions then check their
    /// key in the database, so a replay is still answered.
    pub done_max: u32,
    /// How long a sold-out snapshot refuses a SKU's requests without a Redis call (see
    /// `sold_out.rs`); zero turns the hint off. It bounds how long a counter raised by another
    /// instance goes unseen here, so it must not exceed the reconcile interval.
    pub sold_out_hint: Duration,
}

impl GateConfig {
    /// Defaults for everything but the target: namespace `stockguard`, 250 ms per Redis call,
    /// fail open, 60 s grace (the engine's deadline is at most 30 s), a reconcile pass of at
    /// most 1,000 SKUs every 5 s, every SKU gated, a replay window of 24 h, at most 100,000
    /// keys (about 6 MB) in a SKU's done hash, a sold-out hint of 100 ms.
    pub fn new(target: RedisTarget) -> Self {
        Self {
            target,
            namespace: "stockguard".to_owned(),
            redis_timeout: Duration::from_millis(250),
            when_down: RedisDownPolicy::FailOpen,
            unknown_grace: Duration::from_secs(60),
            reconcile_interval: Duration::from_secs(5),
            reconcile_batch: 1_000,
            scope: GateScope::Every,
            replay_window: Duration::from_secs(24 * 3_600),
            done_max: 100_000,
            sold_out_hint: Duration::from_millis(100),
        }
    }

    /// Refuses a setting outside its bounds.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let namespace_ok = !self.namespace.is_empty()
            && self.namespace.len() <= NAMESPACE_MAX_LEN
            && self
                .namespace
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !namespace_ok {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "redis_namespace_len (1..=32 of [A-Za-z0-9_-])",
                given: self.namespace.len() as u64,
                min: 1,
                max: NAMESPACE_MAX_LEN as u64,
            });
        }
        if self.done_max == 0 || self.done_max > DONE_MAX_LIMIT {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "done_max",
                given: u64::from(self.done_max),
                min: 1,
                max: u64::from(DONE_MAX_LIMIT),
            });
        }
        if self.reconcile_batch == 0 || self.reconcile_batch > RECONCILE_BATCH_MAX {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "reconcile_batch",
                given: u64::from(self.reconcile_batch),
                min: 1,
                max: u64::from(RECONCILE_BATCH_MAX),
            });
        }
        within(
            "redis_timeout_ms",
            self.redis_timeout,
            Duration::from_millis(1),
            REDIS_TIMEOUT_MAX,
        )?;
        within(
            "unknown_grace_ms",
            self.unknown_grace,
            Duration::from_millis(1),
            UNKNOWN_GRACE_MAX,
        )?;
        within(
            "replay_window_ms",
            self.replay_window,
            REPLAY_WINDOW_MIN,
            REPLAY_WINDOW_MAX,
        )?;
        within(
            "reconcile_interval_ms",
            self.reconcile_interval,
            Duration::from_millis(10),
            RECONCILE_INTERVAL_MAX,
        )?;
        within(
            "sold_out_hint_ms",
            self.sold_out_hint,
            Duration::ZERO,
            SOLD_OUT_HINT_MAX.min(self.reconcile_interval),
        )
    }
}

fn within(setting: &'static str, value: Duration, min: Duration, max: Duration) -> Result<(), InvalidInput> {
    if value < min || value > max {
        return Err(InvalidInput::LimitOutOfRange {
            setting,
            given: u64::try_from(value.as_millis()).unwrap_or(u64::MAX),
            min: u64::try_from(min.as_millis()).unwrap_or(u64::MAX),
            max: u64::try_from(max.as_millis()).unwrap_or(u64::MAX),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_enforced() {
        let good = GateConfig::new(RedisTarget::Single("redis://127.0.0.1:6379".into()));
        assert!(good.validate().is_ok());
        let mut bad = good.clone();
        bad.namespace = "has space".into();
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.redis_timeout = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.unknown_grace = UNKNOWN_GRACE_MAX + Duration::from_secs(1);
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.reconcile_interval = Duration::from_millis(1);
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.replay_window = Duration::ZERO;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.done_max = 0;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.reconcile_batch = 0;
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.sold_out_hint = bad.reconcile_interval + Duration::from_millis(1);
        assert!(
            bad.validate().is_err(),
            "a hint longer than the reconcile interval"
        );
        let mut off = good;
        off.sold_out_hint = Duration::ZERO;
        assert!(off.validate().is_ok());
    }

    #[test]
    fn cluster_urls_parse() {
        assert_eq!(
            RedisTarget::parse("redis+cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap(),
            RedisTarget::Cluster(vec![
                "redis://127.0.0.1:7000".into(),
                "redis://127.0.0.1:7001".into()
            ])
        );
        assert!(RedisTarget::parse("redis+cluster://").is_err());
        assert_eq!(
            RedisTarget::parse("redis+sentinel://127.0.0.1:26379,127.0.0.1:26380/shop").unwrap(),
            RedisTarget::Sentinel {
                sentinels: vec!["redis://127.0.0.1:26379".into(), "redis://127.0.0.1:26380".into()],
                service: "shop".into(),
            }
        );
        assert!(RedisTarget::parse("redis+sentinel://127.0.0.1:26379").is_err());
        assert!(RedisTarget::parse("redis+sentinel://127.0.0.1:26379/").is_err());
        assert!(RedisTarget::parse("redis+sentinel:///shop").is_err());
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6379").unwrap(),
            RedisTarget::Single("redis://127.0.0.1:6379".into())
        );
    }
}
