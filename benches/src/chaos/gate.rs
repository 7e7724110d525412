//! The admission gate under faults (`db:strategy+gate` cells): the service runs with a Redis
//! gate (`--redis-url`) on a private Redis node the runner owns, which the `redis_kill` fault
//! SIGKILLs and starts again empty, on top of every other fault (the service SIGKILLed with
//! admissions in flight among them). The gate fails open, so the database still decides
//! every sale, and the checker judges the history as in any cell.
//!
//! The gate adds one check at the end: after quiescence, once the reconciler has had its
//! grace and an interval, every counter must equal the database's stock with nothing left
//! in flight. A counter below the stock is undersell the gate would still cause; above it,
//! admissions the database would refuse.

use std::time::{Duration, Instant};

use anyhow::Context;
use stockguard_core::SkuId;
use stockguard_redis_gate::{Gate, GateConfig, RedisTarget};
use stockguard_testkit::PrivateRedisNode;

use super::checker::SkuState;

/// The service's reconcile interval in gate cells.
pub const RECONCILE_INTERVAL: Duration = Duration::from_millis(200);
/// How long a killed Redis stays down.
const REDIS_DOWN_FOR: Duration = Duration::from_millis(400);

/// The service's grace for a record whose key never committed: past the request timeout, as
/// the service requires, and short, so stranded records go soon after quiescence.
pub fn unknown_grace(request_timeout: Duration) -> Duration {
    request_timeout + Duration::from_secs(1)
}

/// The cell's private Redis.
#[derive(Debug)]
pub struct ChaosRedis {
    node: PrivateRedisNode,
}

impl ChaosRedis {
    /// Starts a node on a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let node = tokio::task::spawn_blocking(PrivateRedisNode::start)
            .await?
            .context("starting the cell's Redis")?;
        Ok(Self { node })
    }

    /// `redis://127.0.0.1:PORT`, the service's `--redis-url`.
    pub fn url(&self) -> String {
        self.node.node.url()
    }

    /// SIGKILLs the node, waits, starts it again empty; the effect, in words.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<String> {
        let started = Instant::now();
        // Blocking process calls, on the runner's multi-thread runtime.
        tokio::task::block_in_place(|| {
            self.node.node.kill();
            std::thread::sleep(REDIS_DOWN_FOR);
            self.node.node.start()
        })?;
        Ok(format!(
            "redis on {} SIGKILLed and back, empty, after {} ms",
            self.node.node.port(),
            started.elapsed().as_millis()
        ))
    }

    /// What is wrong with the service's counters (namespace `stockguard`, the default) against
    /// the database's final `skus`: a counter off the stock, or a record still in flight.
    pub async fn counter_problems(&self, skus: &[SkuState]) -> anyhow::Result<Vec<String>> {
        let gate = Gate::connect(GateConfig::new(RedisTarget::parse(&self.url())?))
            .await
            .context("reading the gate's counters")?;
        let mut problems = Vec::new();
        for state in skus {
            let sku = SkuId::parse(state.sku.as_str())?;
            let stock = state.stock + state.bucket_stock;
            let counter = gate.counter(&sku).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            let in_flight = gate.in_flight(&sku).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
            if !in_flight.is_empty() {
                problems.push(format!("{sku}: {} records still in flight", in_flight.len()));
            }
            match counter {
                Some(counter) if counter < stock => problems.push(format!(
                    "{sku}: counter {counter} below the stock {stock} (undersell)"
                )),
                Some(counter) if counter > stock => {
                    problems.push(format!("{sku}: counter {counter} above the stock {stock}"))
                }
                _ => {}
            }
        }
        Ok(problems)
    }
}
