//! The Redis admission gate's settings (`serve` only): flags and `STOCKGUARD_REDIS_*`
//! environment variables. Without `--redis-url` the service runs without a gate.

use std::time::Duration;

use clap::builder::BoolishValueParser;
use stockguard_redis_gate::{GateConfig, GateScope, RedisDownPolicy, RedisTarget};

/// The gate's flags.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Redis admission gate")]
pub struct RedisArgs {
    /// Put a Redis admission gate in front of deductions and orders (flash sales):
    /// redis://HOST:PORT for one node, redis+cluster://HOST:PORT,HOST:PORT,... for a cluster,
    /// redis+sentinel://HOST:PORT,HOST:PORT,.../NAME for the primary that sentinels monitor.
    #[arg(long, env = "STOCKGUARD_REDIS_URL", value_name = "URL")]
    pub redis_url: Option<String>,
    /// When Redis is down, refuse with 503 instead of going straight to the database.
    #[arg(long, env = "STOCKGUARD_REDIS_FAIL_CLOSED", value_parser = BoolishValueParser::new())]
    pub redis_fail_closed: bool,
    /// Prefix of the gate's keys (default stockguard), so deployments can share a Redis.
    #[arg(long, env = "STOCKGUARD_REDIS_NAMESPACE", value_name = "NAME")]
    pub redis_namespace: Option<String>,
    /// Bound on each Redis call, in milliseconds (default 250).
    #[arg(long, env = "STOCKGUARD_REDIS_TIMEOUT_MS", value_name = "MS")]
    pub redis_timeout_ms: Option<u64>,
    /// How often every counter is recomputed from the database, in milliseconds (default 5000).
    #[arg(long, env = "STOCKGUARD_REDIS_RECONCILE_INTERVAL_MS", value_name = "MS")]
    pub redis_reconcile_interval_ms: Option<u64>,
    /// Most SKUs one reconcile pass recomputes (default 1000; each costs a stock read).
    #[arg(long, env = "STOCKGUARD_REDIS_RECONCILE_BATCH", value_name = "N")]
    pub redis_reconcile_batch: Option<u32>,
    /// Age past which an in-flight record the database does not know is dropped as never
    /// committed, in milliseconds (default 60000; must exceed the request timeout).
    #[arg(long, env = "STOCKGUARD_REDIS_UNKNOWN_GRACE_MS", value_name = "MS")]
    pub redis_unknown_grace_ms: Option<u64>,
    /// Gate only these SKUs, comma-separated; `flash-*` is a prefix (at most 10000 entries).
    /// The others go straight to the database with no Redis call. Default: every SKU.
    #[arg(long, env = "STOCKGUARD_REDIS_GATE_SKUS", value_name = "LIST")]
    pub redis_gate_skus: Option<String>,
    /// How long a client may retry a committed key, in seconds (default 86400; 1..=2592000):
    /// after a counter is warmed for a SKU with sales (Redis lost its data), short admissions
    /// check their key in the database for this long, so a replay is never refused.
    #[arg(long, env = "STOCKGUARD_REDIS_REPLAY_WINDOW_S", value_name = "S")]
    pub redis_replay_window_s: Option<u64>,
    /// Most keys a SKU's done hash holds (default 100000, about 60 bytes each; 1..=10000000).
    /// Past it the hash is dropped and the SKU's refusals check keys in the database for the
    /// replay window.
    #[arg(long, env = "STOCKGUARD_REDIS_DONE_MAX", value_name = "N")]
    pub redis_done_max: Option<u32>,
    /// How long, in ms, a SKU that Redis found sold out (counter 0, nothing in flight) is
    /// refused locally without a Redis call (default 100; 0 turns it off; at most the
    /// reconcile interval and 10000). A committed key is still replayed.
    #[arg(long, env = "STOCKGUARD_REDIS_SOLD_OUT_HINT_MS", value_name = "MS")]
    pub redis_sold_out_hint_ms: Option<u64>,
}

impl RedisArgs {
    /// The gate's configuration, checked; `None` without a URL. `request_timeout` is the
    /// longest a request (and so a commit) may run: the grace must exceed it.
    pub fn resolve(&self, request_timeout: Duration) -> anyhow::Result<Option<GateConfig>> {
        let Some(url) = &self.redis_url else {
            anyhow::ensure!(
                !self.redis_fail_closed
                    && self.redis_namespace.is_none()
                    && self.redis_timeout_ms.is_none()
                    && self.redis_reconcile_interval_ms.is_none()
                    && self.redis_reconcile_batch.is_none()
                    && self.redis_unknown_grace_ms.is_none()
                    && self.redis_gate_skus.is_none()
                    && self.redis_replay_window_s.is_none()
                    && self.redis_done_max.is_none()
                    && self.redis_sold_out_hint_ms.is_none(),
                "the --redis-* settings need --redis-url (STOCKGUARD_REDIS_URL)"
            );
            return Ok(None);
        };
        let target = RedisTarget::parse(url).map_err(|error| anyhow::anyhow!("--redis-url: {error}"))?;
        let mut config = GateConfig::new(target);
        if let Some(namespace) = &self.redis_namespace {
            config.namespace = namespace.clone();
        }
        if let Some(ms) = self.redis_timeout_ms {
            config.redis_timeout = Duration::from_millis(ms);
        }
        if let Some(ms) = self.redis_reconcile_interval_ms {
            config.reconcile_interval = Duration::from_millis(ms);
        }
        if let Some(batch) = self.redis_reconcile_batch {
            config.reconcile_batch = batch;
        }
        if let Some(ms) = self.redis_unknown_grace_ms {
            config.unknown_grace = Duration::from_millis(ms);
        }
        if self.redis_fail_closed {
            config.when_down = RedisDownPolicy::FailClosed;
        }
        if let Some(most) = self.redis_done_max {
            config.done_max = most;
        }
        if let Some(ms) = self.redis_sold_out_hint_ms {
            config.sold_out_hint = Duration::from_millis(ms);
        }
        if let Some(seconds) = self.redis_replay_window_s {
            config.replay_window = Duration::from_secs(seconds);
        }
        if let Some(list) = &self.redis_gate_skus {
            config.scope =
                GateScope::parse(list).map_err(|error| anyhow::anyhow!("--redis-gate-skus: {error}"))?;
        }
        config.validate()?;
        anyhow::ensure!(
            config.unknown_grace > request_timeout,
            "redis_unknown_grace_ms ({}) must exceed the request timeout ({} ms): a request \
             still running could commit after its record was dropped",
            config.unknown_grace.as_millis(),
            request_timeout.as_millis()
        );
        Ok(Some(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_url_there_is_no_gate_and_no_stray_setting() {
        assert!(
            RedisArgs::default()
                .resolve(Duration::from_secs(10))
                .unwrap()
                .is_none()
        );
        let stray = RedisArgs {
            redis_fail_closed: true,
            ..RedisArgs::default()
        };
        assert!(stray.resolve(Duration::from_secs(10)).is_err());
    }

    #[test]
    fn settings_are_checked() {
        let args = RedisArgs {
            redis_url: Some("redis+cluster://127.0.0.1:7000,127.0.0.1:7001".into()),
            redis_fail_closed: true,
            redis_timeout_ms: Some(100),
            ..RedisArgs::default()
        };
        let config = args.resolve(Duration::from_secs(10)).unwrap().unwrap();
        assert_eq!(config.when_down, RedisDownPolicy::FailClosed);
        assert_eq!(config.redis_timeout, Duration::from_millis(100));
        assert_eq!(config.scope, GateScope::Every);
        let scoped = RedisArgs {
            redis_gate_skus: Some("flash-*,hot-1".into()),
            ..args.clone()
        };
        let scope = scoped.resolve(Duration::from_secs(10)).unwrap().unwrap().scope;
        assert!(scope.covers(&stockguard_core::SkuId::parse("flash-9").unwrap()));
        assert!(!scope.covers(&stockguard_core::SkuId::parse("cold").unwrap()));
        let bad_scope = RedisArgs {
            redis_gate_skus: Some("a b".into()),
            ..args.clone()
        };
        assert!(bad_scope.resolve(Duration::from_secs(10)).is_err());
        let short_grace = RedisArgs {
            redis_unknown_grace_ms: Some(5_000),
            ..args.clone()
        };
        assert!(short_grace.resolve(Duration::from_secs(10)).is_err());
        let bad_namespace = RedisArgs {
            redis_namespace: Some("a b".into()),
            ..args
        };
        assert!(bad_namespace.resolve(Duration::from_secs(10)).is_err());
    }
}
