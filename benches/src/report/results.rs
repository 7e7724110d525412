//! What a run produced, as results.json holds it.

use std::collections::BTreeMap;

use serde::Serialize;
use stockguard_testkit::Backend;

use crate::anchors::AnchorResult;
use crate::audit_scaling::AuditScalingResult;
use crate::case::CaseResult;
use crate::checkout::CheckoutResult;
use crate::flash::FlashResult;
use crate::flash_faults::FlashFaultResult;
use crate::flash_http::FlashHttpResult;
use crate::galera::GaleraResult;
use crate::gate_overhead::OverheadResult;
use crate::instances::InstancesResult;
use crate::pg_ha::PgHaResult;
use crate::redis_lock::LockResult;
use crate::service_memory::ServiceMemoryResult;

/// The machine the run happened on.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MachineInfo {
    /// Logical cores available to the process.
    pub cores: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu: String,
    /// OS, from /etc/os-release.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

impl MachineInfo {
    /// Reads what it can; unknown fields say so.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let os = read("/etc/os-release")
            .lines()
            .find(|l| l.starts_with("PRETTY_NAME="))
            .map_or_else(
                || "unknown".to_owned(),
                |l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_owned(),
            );
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Results {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The command line.
    pub command: String,
    /// Profile name.
    pub profile: String,
    /// The seed every case used.
    pub seed: u64,
    /// The machine.
    pub machine: MachineInfo,
    /// Per database: version and durability settings.
    pub databases: BTreeMap<Backend, BTreeMap<String, String>>,
    /// Databases that were asked for but skipped, with the reason.
    pub skipped_databases: BTreeMap<Backend, String>,
    /// True when no server was reachable and the run fell back to embedded SQLite.
    pub sqlite_fallback: bool,
    /// What the databases and Redis alone reached, run by pgbench, sysbench and
    /// redis-benchmark in the same run (the ceilings in report.md's "Anchors").
    pub anchors: Vec<AnchorResult>,
    /// Anchor checks that failed (negative stock, a log that does not add up, a counter that
    /// disagrees with the tool).
    pub anchor_problems: Vec<String>,
    /// Why some or all anchors did not run, when a tool or Redis was missing.
    pub anchors_skipped: Option<String>,
    /// Every case, in run order.
    pub cases: Vec<CaseResult>,
    /// The full audit against the incremental one, per database and ledger size.
    pub audit_scaling: Vec<AuditScalingResult>,
    /// A hot SKU on a private Galera cluster, by topology (`--galera`).
    pub galera: Vec<GaleraResult>,
    /// One or three service instances behind haproxy, by routing (`--instances`).
    pub instances: Vec<InstancesResult>,
    /// A standalone PostgreSQL against a Patroni cluster's primary, synchronous and
    /// asynchronous, straight and through haproxy (`--pg-ha`).
    pub pg_ha: Vec<PgHaResult>,
    /// The `stockguard serve` process's resident set at idle and with 100 and 1 000 open
    /// keep-alive connections.
    pub service_memory: Option<ServiceMemoryResult>,
    /// Why the service-memory section did not run, when it was on.
    pub service_memory_skipped: Option<String>,
    /// Cases that failed to run at all (connection errors and the like).
    pub case_errors: Vec<String>,
    /// The checkout workload's cases (orders and holds), in run order.
    pub checkout: Vec<CheckoutResult>,
    /// The flash-sale workload's cases (docs/redis.md), in run order.
    pub flash: Vec<FlashResult>,
    /// The bare Redis Lua check-and-decrement measured in the same run: refusals per second
    /// at the flash sale's client count, the ceiling the gate's refusals chase.
    pub flash_ceiling_refusals_per_s: Option<f64>,
    /// Refusals over HTTP against the trivial-GET ceiling, per database.
    pub flash_http: Vec<FlashHttpResult>,
    /// The gate's sales under Redis faults, in run order.
    pub flash_faults: Vec<FlashFaultResult>,
    /// Why the flash-sale workload did not run, when Redis did not answer.
    pub flash_skipped: Option<String>,
    /// The gate's cost at low conflict: `guarded` with and without it, per database.
    pub gate_overhead: Vec<OverheadResult>,
    /// The seed's Redis lock around an unguarded read-modify-write, with and without a
    /// fencing token, holders paused past the TTL.
    pub redis_lock: Vec<LockResult>,
}
