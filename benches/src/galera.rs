//! A hot SKU on a MariaDB Galera cluster, by topology: how the same workload fares when three
//! service instances write to one node, spread their writes over all three nodes, or route
//! each SKU to one node, against the same three instances on one standalone server.
//!
//! Every case runs the harness's own measurement (`measure`: warm-up, stock sized to sell
//! out, the measured run, the audit) in a fresh database; the cluster and the standalone
//! server are private (`stockguard-testkit`), started once for the section and dropped after.
//! On Galera a write that conflicts with another node's fails at COMMIT (certification); the
//! engine retries it, and the section reports how many it retried and that none was answered
//! as outcome unknown.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::Connection;
use sqlx::mysql::MySqlPoolOptions;
use stockguard_api::{AnyStore, DatabaseTarget, store::StoreSettings};
use stockguard_core::{InventoryStore, RetryCause, SkuId, Strategy};
use stockguard_testkit::{Backend, MariaDbOptions, PrivateGalera, PrivateMariaDb};

use crate::case::{CaseResult, CaseSpec, Deductor, Transport, Variant};
use crate::db::{RAW_ACQUIRE_TIMEOUT, RawPool};
use crate::measure::{coalescer_counters, measure, open_store};
use crate::report::Results;
use crate::runner::LibraryDeductor;
use crate::tally::Outcome;
use crate::workload::{LevelSpec, Request, Skew, sku_name};

/// Nodes in the cluster, and service instances in every topology.
pub const GALERA_NODES: usize = 3;

/// Where the instances' writes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Topology {
    /// Three instances on one standalone MariaDB (no Galera): the reference.
    Standalone,
    /// Three instances, every one writing to the same Galera node.
    OneNode,
    /// Instance `i` on node `i`; requests round-robin over the instances.
    Spread,
    /// Instance `i` on node `i`; each SKU's requests go to instance `sku mod 3`.
    SkuAffinity,
}

impl Topology {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::OneNode => "one_node",
            Topology::Spread => "spread",
            Topology::SkuAffinity => "sku_affinity",
        }
    }
}

/// One case: a topology, a strategy and the workload.
#[derive(Debug, Clone)]
pub struct GaleraSpec {
    /// Where the writes go.
    pub topology: Topology,
    /// The workload, strategy and bounds (its backend is MySQL: Galera runs MariaDB).
    pub case: CaseSpec,
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct GaleraResult {
    /// Where the writes went.
    pub topology: Topology,
    /// The harness's figures and audit for the case.
    pub case: CaseResult,
    /// Certification failures and deadlocks the engine retried in the measured run.
    pub certification_retries: u64,
    /// Answers given as outcome unknown (must be 0: a certification failure is a rollback).
    pub outcome_unknown: u64,
}

impl GaleraResult {
    /// Why the case fails the run, if it does: a failed audit, an answer given as unknown,
    /// or an error that is not a refusal to shed load.
    pub fn failure(&self) -> Option<String> {
        let spec = &self.case.spec;
        let label = format!("{} {} at {}", self.topology.as_str(), spec.variant, spec.level);
        if !self.case.audit.passed() || self.outcome_unknown == 0 {
            self.case.failure(&label)
        } else {
            Some(format!(
                "{label}: {} answers given as outcome unknown",
                self.outcome_unknown
            ))
        }
    }
}

/// The section's cases, from a template case (requesters, pool, bounds, keying, seed): the
/// hot SKU in every topology for `Coalesced`, `Guarded` and `Pessimistic` (affinity is one
/// node there), then 16 SKUs in every topology for `Coalesced` and `Guarded`.
pub fn galera_specs(template: &CaseSpec) -> Vec<GaleraSpec> {
    let level = |sku_count| LevelSpec {
        sku_count,
        skew: Skew::Uniform,
    };
    let mut specs = Vec::new();
    let mut push = |topology, strategy, sku_count| {
        specs.push(GaleraSpec {
            topology,
            case: CaseSpec {
                backend: Backend::MySql,
                variant: Variant::Library(strategy),
                transport: Transport::InProcess,
                level: level(sku_count),
                ..template.clone()
            },
        });
    };
    for strategy in [Strategy::Coalesced, Strategy::Guarded, Strategy::Pessimistic] {
        for topology in [Topology::Standalone, Topology::OneNode, Topology::Spread] {
            push(topology, strategy, 1);
        }
    }
    for strategy in [Strategy::Coalesced, Strategy::Guarded] {
        for topology in [
            Topology::Standalone,
            Topology::OneNode,
            Topology::Spread,
            Topology::SkuAffinity,
        ] {
            push(topology, strategy, 16);
        }
    }
    specs
}

/// Three instances' stores, routed by topology.
struct Routed {
    instances: Vec<LibraryDeductor>,
    by_sku: bool,
    next: AtomicUsize,
}

impl Deductor for Routed {
    async fn deduct(&self, request: &Request) -> Outcome {
        let index = if self.by_sku {
            request.sku_index % self.instances.len()
        } else {
            self.next.fetch_add(1, Ordering::Relaxed) % self.instances.len()
        };
        self.instances[index].deduct(request).await
    }
}

/// The servers the section runs on.
struct Servers {
    cluster: PrivateGalera,
    standalone: PrivateMariaDb,
}

/// Runs every case; a case that fails to run is recorded, and the section goes on.
pub async fn run_galera_cases(specs: Vec<GaleraSpec>, log: &impl Fn(String), results: &mut Results) {
    if specs.is_empty() {
        return;
    }
    log(format!(
        "galera: starting a private {GALERA_NODES}-node cluster and a standalone MariaDB"
    ));
    let servers = match start_servers().await {
        Ok(servers) => servers,
        Err(error) => {
            let message = format!("galera section: {error:#}");
            log(format!("CASE FAILED: {message}"));
            results.case_errors.push(message);
            return;
        }
    };
    for (index, spec) in specs.into_iter().enumerate() {
        let label = format!(
            "galera {} {} at {}",
            spec.topology.as_str(),
            spec.case.variant,
            spec.case.level
        );
        match run_case(&servers, &spec, index).await {
            Ok(result) => {
                log(format!(
                    "{label:<44} {:>9.0} deductions/s, {} certification retries, audit {}",
                    result.case.successes_per_s,
                    result.certification_retries,
                    result.case.audit.verdict()
                ));
                results.galera.push(result);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", spec.case.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
}

async fn start_servers() -> anyhow::Result<Servers> {
    let cluster = PrivateGalera::start(GALERA_NODES)
        .await
        .context("starting the Galera cluster (galera-4 and rsync installed?)")?;
    let standalone = PrivateMariaDb::start(MariaDbOptions::new())
        .await
        .context("starting the standalone MariaDB")?;
    Ok(Servers { cluster, standalone })
}

/// Each instance's server URL (`…/mysql`), by topology.
fn instance_urls(servers: &Servers, topology: Topology) -> Vec<String> {
    let nodes = servers.cluster.urls();
    match topology {
        Topology::Standalone => vec![servers.standalone.url(); GALERA_NODES],
        Topology::OneNode => vec![nodes[0].clone(); GALERA_NODES],
        Topology::Spread | Topology::SkuAffinity => nodes,
    }
}

async fn run_case(servers: &Servers, spec: &GaleraSpec, index: usize) -> anyhow::Result<GaleraResult> {
    let urls = instance_urls(servers, spec.topology);
    let name = format!("{}galera_{index}", crate::db::DATABASE_PREFIX);
    let mut admin = sqlx::MySqlConnection::connect(&urls[0]).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut admin)
        .await
        .context("creating the case's database")?;
    let result = run_in(spec, &urls, &name).await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP DATABASE {name}")))
        .execute(&mut admin)
        .await;
    let _ = admin.close().await;
    let mut result = result?;
    dropped.context("dropping the case's database")?;
    result.case.database = name;
    Ok(result)
}

async fn run_in(spec: &GaleraSpec, urls: &[String], name: &str) -> anyhow::Result<GaleraResult> {
    let case = &spec.case;
    let Variant::Library(strategy) = case.variant else {
        bail!("the Galera section runs library strategies only");
    };
    let sku_names: Vec<String> = (0..case.level.sku_count).map(sku_name).collect();
    let skus: Arc<Vec<SkuId>> = Arc::new(
        sku_names
            .iter()
            .map(|n| SkuId::parse(n.clone()))
            .collect::<Result<_, _>>()?,
    );
    // The instances share the case's pool size, as one instance would have it alone.
    let instances = u32::try_from(GALERA_NODES).unwrap_or(u32::MAX);
    let pool_per_instance = (case.pool_size / instances).max(2);
    let mut stores: Vec<Arc<AnyStore>> = Vec::with_capacity(urls.len());
    for url in urls {
        let mut settings = StoreSettings::new(DatabaseTarget::parse(
            &url.replace("/mysql", &format!("/{name}")),
        )?);
        settings.pool_size = pool_per_instance;
        settings.acquire_timeout = Duration::from_secs(5);
        if stores.is_empty() {
            // Migrates once; the others find the schema (replicated on Galera).
            stores.push(Arc::new(open_store(settings).await?));
        } else {
            let store = AnyStore::connect(settings).await?;
            store.probe().await.context("probing the server")?;
            stores.push(Arc::new(store));
        }
    }
    // The harness's own reads and resets: they wait for every write the cluster committed
    // before them, wherever it was made.
    let admin_url = urls[0].replace("/mysql", &format!("/{name}"));
    let galera = spec.topology != Topology::Standalone;
    let admin = RawPool::MySql(
        MySqlPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
            .after_connect(move |connection, _| {
                Box::pin(async move {
                    if galera {
                        sqlx::query("SET SESSION wsrep_sync_wait = 1")
                            .execute(&mut *connection)
                            .await?;
                        // Resets write outside a transaction, past the adapter's guards.
                        sqlx::query("SET @stockguard_maintenance = 1")
                            .execute(&mut *connection)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect(&admin_url)
            .await?,
    );
    let deductor = Arc::new(Routed {
        instances: stores
            .iter()
            .map(|store| LibraryDeductor::new(Arc::clone(store), Arc::clone(&skus), strategy))
            .collect(),
        by_sku: spec.topology == Topology::SkuAffinity,
        next: AtomicUsize::new(0),
    });
    // `measure` reads the counters once just before the measured run and once just after
    // it; the retries are sampled with them, so they cover the measured run alone.
    let retry_samples = Arc::new(std::sync::Mutex::new(Vec::with_capacity(2)));
    let (counted, samples) = (stores.clone(), Arc::clone(&retry_samples));
    let result = measure(case, &admin, deductor, &sku_names, move || {
        samples
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(deadlock_retries(&counted));
        counted
            .iter()
            .map(|store| coalescer_counters(store))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
    .await;
    let samples = retry_samples
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let certification_retries = match samples.as_slice() {
        [before, after] => after - before,
        _ => bail!(
            "the counters were read {} times, not before and after the run",
            samples.len()
        ),
    };
    let outcome_unknown = stores
        .iter()
        .map(|store| store.engine_stats().outcome_unknown())
        .sum();
    for store in &stores {
        store.close().await;
    }
    admin.close().await;
    Ok(GaleraResult {
        topology: spec.topology,
        case: result?,
        certification_retries,
        outcome_unknown,
    })
}

/// Certification failures and deadlocks the stores' engines have retried so far.
fn deadlock_retries(stores: &[Arc<AnyStore>]) -> u64 {
    stores
        .iter()
        .flat_map(|store| store.engine_stats().retries().collect::<Vec<_>>())
        .filter(|(cause, _)| *cause == RetryCause::Deadlock)
        .map(|(_, count)| count)
        .sum()
}
