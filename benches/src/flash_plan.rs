//! The Redis workloads of a run, planned and run together: the seed's Redis lock
//! (redis_lock.rs), the gate at low conflict (gate_overhead.rs), the flash sales and the
//! bare Lua ceiling (flash.rs), the sales under Redis faults (flash_faults.rs), and refusals
//! over HTTP against the trivial-GET ceiling (flash_http.rs). Skipped, saying why, when Redis does not answer.

use std::time::Duration;

use stockguard_testkit::Backend;

use crate::flash::{FlashSpec, flash_specs, raw_lua_refusals, run_flash};
use crate::flash_faults::{FlashFault, FlashFaultSpec, flash_fault_specs, run_flash_fault};
use crate::flash_http::{FlashHttpSpec, flash_http_specs, run_flash_http};
use crate::flash_service_kill::run_service_killed;
use crate::gate_overhead::{OverheadSpec, overhead_specs, run_overhead};
use crate::redis_lock::{LockSpec, lock_specs, run_lock};

/// What the flash-sale workload is planned from.
#[derive(Debug, Clone)]
pub struct FlashInputs<'a> {
    /// The run's databases.
    pub databases: &'a [Backend],
    /// Buy attempts per sale.
    pub attempts: u64,
    /// Requesters of the low-conflict overhead cases.
    pub requesters: usize,
    /// Pooled connections.
    pub pool_size: u32,
    /// Length of each low-conflict overhead case.
    pub duration: Duration,
    /// The run's seed.
    pub seed: u64,
    /// The gate's Redis.
    pub redis_url: &'a str,
    /// Whether a missing Redis fails the run (CI, `--require-db`).
    pub required: bool,
    /// Run the sentinel failover on every database, not on the first alone (see
    /// [`flash_fault_specs`]).
    pub failover_on_every_database: bool,
}

/// The flash-sale workload's cases, or why there are none.
#[derive(Debug, Default)]
pub struct FlashPlan {
    /// The sales.
    pub sales: Vec<FlashSpec>,
    /// The gate's cost at low conflict, with and without it.
    pub overhead: Vec<OverheadSpec>,
    /// The seed's Redis lock, fenced and not (the negative control).
    pub locks: Vec<LockSpec>,
    /// The gate's sales under Redis faults, each on a private Redis.
    pub faults: Vec<FlashFaultSpec>,
    /// Refusals over HTTP against the trivial-GET ceiling.
    pub http: Vec<FlashHttpSpec>,
    /// Why nothing runs, when Redis did not answer.
    pub skipped: Option<String>,
}

impl FlashPlan {
    /// Nothing to run.
    pub fn clear(&mut self) {
        self.sales.clear();
        self.overhead.clear();
        self.locks.clear();
        self.faults.clear();
        self.http.clear();
    }
}

/// Plans the workload when Redis answers; skips it, saying why, when it does not (an error
/// instead when Redis is required).
pub async fn plan_flash(inputs: FlashInputs<'_>) -> anyhow::Result<FlashPlan> {
    match redis_answers(inputs.redis_url).await {
        Ok(()) => {
            let sales = flash_specs(
                inputs.databases,
                inputs.attempts,
                inputs.pool_size,
                inputs.redis_url,
            );
            Ok(FlashPlan {
                faults: flash_fault_specs(&sales, inputs.failover_on_every_database),
                http: flash_http_specs(
                    inputs.databases,
                    inputs.requesters,
                    inputs.duration,
                    inputs.pool_size,
                    inputs.redis_url,
                ),
                sales,
                overhead: overhead_specs(
                    inputs.databases,
                    inputs.requesters,
                    inputs.pool_size,
                    inputs.duration,
                    inputs.seed,
                    inputs.redis_url,
                ),
                locks: lock_specs(inputs.databases, inputs.redis_url),
                skipped: None,
            })
        }
        Err(reason) => {
            anyhow::ensure!(!inputs.required, "the flash sale needs Redis: {reason}");
            eprintln!("stockguard-bench: skipping the flash-sale workload: {reason}");
            Ok(FlashPlan {
                skipped: Some(reason),
                ..FlashPlan::default()
            })
        }
    }
}

/// Whether Redis at `redis_url` answers a PING within 2 s; `Err` says why not.
pub async fn redis_answers(redis_url: &str) -> Result<(), String> {
    let reachable = async {
        let client = redis::Client::open(redis_url)?;
        let mut connection = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut connection).await
    };
    match tokio::time::timeout(Duration::from_secs(2), reachable).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(format!("Redis at {redis_url} refused: {error}")),
        Err(_) => Err(format!("Redis at {redis_url} did not answer in 2 s")),
    }
}

/// Runs the Redis-lock cases, the low-conflict overhead cases, the sales, then the bare Lua
/// ceiling at the sales' client count, logging each line; a case that could not run is
/// recorded in `results.case_errors`.
pub async fn run_flash_cases(plan: FlashPlan, log: impl Fn(String), results: &mut crate::report::Results) {
    for spec in plan.locks {
        let label = format!("{} {}", spec.backend, spec.name());
        match run_lock(spec).await {
            Ok(case) => {
                log(format!(
                    "{label:<52} sold {} of {}  oversold {}  fenced out {}  pauses {}  audit {}",
                    case.sold,
                    case.supply,
                    case.oversold,
                    case.fenced_out,
                    case.pauses,
                    if case.audit_clean { "clean" } else { "CAUGHT" }
                ));
                results.redis_lock.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    for spec in plan.overhead {
        let label = spec.label();
        match run_overhead(spec).await {
            Ok(case) => {
                log(format!(
                    "{label:<52} {:>9.0} ok/s  p99 {:>8.2} ms",
                    case.per_s,
                    case.p99_us as f64 / 1000.0
                ));
                results.gate_overhead.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    let Some(first) = plan.sales.first().cloned() else {
        return;
    };
    for spec in plan.sales {
        let label = spec.label();
        match run_flash(spec).await {
            Ok(case) => {
                log(format!("{label:<52} {}", case.summary()));
                results.flash.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    for spec in plan.faults {
        let label = spec.label();
        let ran = if spec.fault == FlashFault::ServiceKilled {
            run_service_killed(spec).await
        } else {
            run_flash_fault(spec).await
        };
        match ran {
            Ok(case) => {
                log(format!(
                    "{label:<52} fault {:>5} ms  sold {} + {} after reconcile  drift {}  check {}",
                    case.fault_ms,
                    case.sold_in_sale,
                    case.sold_after_reconcile,
                    case.drift_units,
                    if case.failure().is_none() { "pass" } else { "FAIL" }
                ));
                results.flash_faults.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    for spec in plan.http {
        let label = spec.label();
        match run_flash_http(spec).await {
            Ok(case) => {
                log(format!(
                    "{label:<52} {:>9.0} refusals/s ({:.0} without the hint)  GET ceiling {:>9.0}/s  share {:.2} ({:.2})",
                    case.refusals_per_s,
                    case.refusals_without_hint_per_s,
                    case.ceiling_per_s,
                    case.share(),
                    case.share_without_hint()
                ));
                results.flash_http.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", results.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    match raw_lua_refusals(&first.redis_url, first.clients, first.attempts).await {
        Ok(per_s) => {
            log(format!(
                "{:<52} {per_s:>9.0} refusals/s",
                "redis bare lua ceiling"
            ));
            results.flash_ceiling_refusals_per_s = Some(per_s);
        }
        Err(error) => results
            .case_errors
            .push(format!("the Redis Lua ceiling: {error:#}")),
    }
}
