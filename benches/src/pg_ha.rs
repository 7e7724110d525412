//! What PostgreSQL high availability costs: the same workload on a standalone private
//! PostgreSQL, and on a Patroni cluster's primary (`.ci/pg-ha`) with a synchronous standby in
//! strict mode, straight to the primary and through haproxy, and through haproxy with
//! Patroni's default asynchronous replication (which a failover can make lose acknowledged
//! commits: docs/distributed.md).
//!
//! Every case runs the harness's own library case (`runner::run_case_on`: warm-up, stock
//! sized to sell out, the measured run, the audit) in a fresh database on that server. The
//! standalone server and the cluster's members run with the same settings (`fsync = off`,
//! `shared_buffers = 32MB`), so the ratio is the standby's round trip and the proxy hop.

use anyhow::Context;
use serde::Serialize;
use stockguard_core::Strategy;
use stockguard_testkit::{Backend, PostgresOptions, PrivatePostgres};

use crate::case::{CaseResult, CaseSpec, Transport, Variant};
use crate::pg_ha_cluster::PgHa;
use crate::report::Results;
use crate::runner::run_case_on;
use crate::workload::{LevelSpec, Skew};

/// Where the case runs, in the order the section runs them (the cluster is switched to
/// asynchronous replication for the last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    /// A standalone private PostgreSQL, no standby: the reference.
    Standalone,
    /// The cluster's primary, straight to its port; every commit waits for the standby.
    SyncDirect,
    /// The same through haproxy, as the service is deployed (docs/deploy.md).
    SyncHaproxy,
    /// Through haproxy with asynchronous replication: faster, and unsafe at failover.
    AsyncHaproxy,
}

impl Setup {
    /// Every set-up, in the order they run.
    pub const ALL: [Setup; 4] = [
        Setup::Standalone,
        Setup::SyncDirect,
        Setup::SyncHaproxy,
        Setup::AsyncHaproxy,
    ];

    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Standalone => "standalone",
            Setup::SyncDirect => "sync_direct",
            Setup::SyncHaproxy => "sync_haproxy",
            Setup::AsyncHaproxy => "async_haproxy",
        }
    }
}

/// One case: a set-up and the workload.
#[derive(Debug, Clone)]
pub struct PgHaSpec {
    /// Where it runs.
    pub setup: Setup,
    /// The workload, strategy and bounds (PostgreSQL, in-process).
    pub case: CaseSpec,
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct PgHaResult {
    /// Where it ran.
    pub setup: Setup,
    /// The harness's figures and audit for the case.
    pub case: CaseResult,
}

impl PgHaResult {
    /// Why the case fails the run, if it does: a failed audit, or an error that is not a
    /// refusal to shed load.
    pub fn failure(&self) -> Option<String> {
        let spec = &self.case.spec;
        let label = format!("{} {} at {}", self.setup.as_str(), spec.variant, spec.level);
        self.case.failure(&label)
    }
}

/// The section's cases, from a template case: `Coalesced`, `Guarded` and `Pessimistic` at
/// one hot SKU, and `Coalesced` and `Guarded` at 16 SKUs, in every set-up, grouped by set-up.
pub fn pg_ha_specs(template: &CaseSpec) -> Vec<PgHaSpec> {
    let workloads = [
        (Strategy::Coalesced, 1),
        (Strategy::Guarded, 1),
        (Strategy::Pessimistic, 1),
        (Strategy::Coalesced, 16),
        (Strategy::Guarded, 16),
    ];
    Setup::ALL
        .into_iter()
        .flat_map(|setup| {
            workloads.map(|(strategy, sku_count)| PgHaSpec {
                setup,
                case: CaseSpec {
                    backend: Backend::Postgres,
                    variant: Variant::Library(strategy),
                    transport: Transport::InProcess,
                    level: LevelSpec {
                        sku_count,
                        skew: Skew::Uniform,
                    },
                    ..template.clone()
                },
            })
        })
        .collect()
}

/// The servers the section runs on.
struct Servers {
    standalone: PrivatePostgres,
    cluster: PgHa,
    /// The cluster's replication now.
    sync: bool,
}

impl Servers {
    async fn start() -> anyhow::Result<Self> {
        let standalone = PrivatePostgres::start(PostgresOptions::new())
            .await
            .context("starting the standalone PostgreSQL")?;
        let cluster = PgHa::start()
            .await
            .context("starting the PostgreSQL HA cluster (.ci/pg-ha)")?;
        Ok(Self {
            standalone,
            cluster,
            sync: true,
        })
    }

    /// The admin URL for `setup`, switching the cluster's replication when it must.
    async fn admin_url(&mut self, setup: Setup) -> anyhow::Result<String> {
        let sync = setup != Setup::AsyncHaproxy;
        if setup != Setup::Standalone && sync != self.sync {
            self.cluster.set_replication(sync).await?;
            self.sync = sync;
        }
        match setup {
            Setup::Standalone => Ok(self.standalone.url()),
            Setup::SyncDirect => self.cluster.primary_direct_url().await,
            Setup::SyncHaproxy | Setup::AsyncHaproxy => Ok(self.cluster.url.clone()),
        }
    }
}

/// Runs every case; a case that fails to run is recorded, and the section goes on.
pub async fn run_pg_ha_cases(mut specs: Vec<PgHaSpec>, log: &impl Fn(String), results: &mut Results) {
    if specs.is_empty() {
        return;
    }
    specs.sort_by_key(|spec| spec.setup);
    log("pg-ha: starting a standalone PostgreSQL and a Patroni cluster (.ci/pg-ha)".to_owned());
    let mut servers = match Servers::start().await {
        Ok(servers) => servers,
        Err(error) => {
            let message = format!("pg-ha section: {error:#}");
            log(format!("CASE FAILED: {message}"));
            results.case_errors.push(message);
            return;
        }
    };
    for spec in specs {
        let label = format!(
            "pg-ha {} {} at {}",
            spec.setup.as_str(),
            spec.case.variant,
            spec.case.level
        );
        let seed = spec.case.seed;
        let ran = match servers.admin_url(spec.setup).await {
            Ok(url) => run_case_on(spec.case, &url).await,
            Err(error) => Err(error),
        };
        match ran {
            Ok(case) => {
                log(format!(
                    "{label:<44} {:>9.0} deductions/s, p99 {:.1} ms, audit {}",
                    case.successes_per_s,
                    case.latency_us_p99 as f64 / 1000.0,
                    case.audit.verdict()
                ));
                results.pg_ha.push(PgHaResult {
                    setup: spec.setup,
                    case,
                });
            }
            Err(error) => {
                let message = format!("{label} (seed {seed}): {error:#}");
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_async_cases_run_last_and_every_setup_has_every_workload() {
        let template = CaseSpec {
            backend: Backend::Sqlite,
            variant: Variant::Library(Strategy::Optimistic),
            transport: Transport::Http,
            level: "1".parse().expect("a valid level"),
            requesters: 64,
            pool_size: 64,
            warmup: std::time::Duration::from_millis(100),
            bounds: crate::case::Bounds {
                duration: std::time::Duration::from_secs(1),
                ops_per_requester: None,
            },
            quantity: crate::workload::QuantityDist::Fixed { units: 1 },
            keying: crate::workload::Keying::KEYED,
            stock: crate::case::StockSizing::Auto { fill: 0.9 },
            seed: 7,
        };
        let specs = pg_ha_specs(&template);
        assert_eq!(specs.len(), 4 * 5);
        assert!(specs.windows(2).all(|pair| pair[0].setup <= pair[1].setup));
        assert_eq!(specs.last().map(|spec| spec.setup), Some(Setup::AsyncHaproxy));
        assert!(specs.iter().all(
            |spec| spec.case.backend == Backend::Postgres && spec.case.transport == Transport::InProcess
        ));
    }
}
