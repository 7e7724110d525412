//! Many service instances on one database, behind haproxy: what N coalescers contending for a
//! hot row cost, and whether routing each SKU to one instance wins it back.
//!
//! Three set-ups, each behind the same private haproxy (so the proxy hop is in every one):
//! one instance; three instances with round-robin; three instances with SKU affinity (a hash
//! of the SKU's path). The instances are the real HTTP service (`stockguard_api::start`), each
//! on its own runtime with its own store, on one fresh PostgreSQL database. The instances
//! share the case's pool size (each gets a third), as a deployment must size them: three full
//! pools of 64 exceed PostgreSQL's default 100 connections, and a first run that tried it
//! answered hundreds of requests `unavailable`. The load
//! is the harness's lean HTTP client, and every case runs the harness's own measurement and
//! in-database audit ([`crate::measure::measure`]).

use std::sync::Arc;

use anyhow::bail;
use serde::Serialize;
use stockguard_core::Strategy;
use stockguard_testkit::Backend;

use crate::case::{CaseResult, CaseSpec, Transport, Variant};
use crate::db::{FreshDatabase, RawPool};
use crate::haproxy::{Balance, Haproxy};
use crate::http::{HttpDeductor, ServiceUnderTest};
use crate::measure::{coalescer_counters, measure, store_settings};
use crate::report::Results;
use crate::workload::{LevelSpec, Skew, sku_name};

/// Service instances in the set-ups that have several.
pub const INSTANCES: usize = 3;

/// How many instances, and how haproxy routes to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Setup {
    /// One instance behind haproxy: the reference.
    OneInstance,
    /// [`INSTANCES`] instances, round-robin.
    RoundRobin,
    /// [`INSTANCES`] instances, each SKU to one of them.
    SkuAffinity,
}

impl Setup {
    /// The name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::OneInstance => "one_instance",
            Setup::RoundRobin => "round_robin",
            Setup::SkuAffinity => "sku_affinity",
        }
    }

    fn instances(self) -> usize {
        match self {
            Setup::OneInstance => 1,
            Setup::RoundRobin | Setup::SkuAffinity => INSTANCES,
        }
    }

    fn balance(self) -> Balance {
        match self {
            Setup::OneInstance | Setup::RoundRobin => Balance::RoundRobin,
            Setup::SkuAffinity => Balance::SkuAffinity,
        }
    }
}

/// One case: a set-up and the workload.
#[derive(Debug, Clone)]
pub struct InstancesSpec {
    /// Instances and routing.
    pub setup: Setup,
    /// The workload, strategy and bounds (PostgreSQL, over HTTP).
    pub case: CaseSpec,
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct InstancesResult {
    /// Instances and routing.
    pub setup: Setup,
    /// The harness's figures and audit for the case.
    pub case: CaseResult,
}

impl InstancesResult {
    /// Why the case fails the run, if it does: a failed audit, or an error that is not a
    /// refusal to shed load.
    pub fn failure(&self) -> Option<String> {
        let spec = &self.case.spec;
        let label = format!("{} {} at {}", self.setup.as_str(), spec.variant, spec.level);
        self.case.failure(&label)
    }
}

/// The section's cases, from a template case: `Coalesced` and `Guarded`, at one hot SKU and
/// at 16 SKUs, in every set-up.
pub fn instances_specs(template: &CaseSpec) -> Vec<InstancesSpec> {
    let mut specs = Vec::new();
    for sku_count in [1, 16] {
        for strategy in [Strategy::Coalesced, Strategy::Guarded] {
            for setup in [Setup::OneInstance, Setup::RoundRobin, Setup::SkuAffinity] {
                specs.push(InstancesSpec {
                    setup,
                    case: CaseSpec {
                        backend: Backend::Postgres,
                        variant: Variant::Library(strategy),
                        transport: Transport::Http,
                        level: LevelSpec {
                            sku_count,
                            skew: Skew::Uniform,
                        },
                        ..template.clone()
                    },
                });
            }
        }
    }
    specs
}

/// Runs every case; a case that fails to run is recorded, and the section goes on.
pub async fn run_instances_cases(specs: Vec<InstancesSpec>, log: &impl Fn(String), results: &mut Results) {
    for spec in specs {
        let label = format!(
            "instances {} {} at {}",
            spec.setup.as_str(),
            spec.case.variant,
            spec.case.level
        );
        match run_case(&spec).await {
            Ok(result) => {
                log(format!(
                    "{label:<48} {:>9.0} deductions/s, audit {}",
                    result.case.successes_per_s,
                    result.case.audit.verdict()
                ));
                results.instances.push(result);
            }
            Err(error) => {
                let message = format!("{label} (seed {}): {error:#}", spec.case.seed);
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
}

async fn run_case(spec: &InstancesSpec) -> anyhow::Result<InstancesResult> {
    let database = FreshDatabase::create(Backend::Postgres).await?;
    let result = run_in(spec, &database).await;
    let name = database.name();
    database.drop_now().await?;
    let mut case = result?;
    case.database = name;
    Ok(InstancesResult {
        setup: spec.setup,
        case,
    })
}

async fn run_in(spec: &InstancesSpec, database: &FreshDatabase) -> anyhow::Result<CaseResult> {
    let case = &spec.case;
    let Variant::Library(strategy) = case.variant else {
        bail!("the instances section runs library strategies only");
    };
    let sku_names: Vec<String> = (0..case.level.sku_count).map(sku_name).collect();
    let instances = spec.setup.instances();
    let mut settings = store_settings(case, database)?;
    settings.pool_size = (case.pool_size / u32::try_from(instances).unwrap_or(1)).max(2);
    let auth_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut services = Vec::with_capacity(instances);
    for _ in 0..instances {
        // Each migrates (a no-op after the first) and probes, as `stockguard serve` does.
        match ServiceUnderTest::start_with_token(
            settings.clone(),
            case.requesters,
            Some(strategy),
            None,
            auth_token.clone(),
        )
        .await
        {
            Ok(service) => services.push(service),
            Err(error) => {
                shut_down(services).await;
                return Err(error);
            }
        }
    }
    let addresses: Vec<_> = services.iter().map(ServiceUnderTest::address).collect();
    let outcome = drive(spec, database, &services, &addresses, &auth_token, &sku_names).await;
    shut_down(services).await;
    outcome
}

async fn drive(
    spec: &InstancesSpec,
    database: &FreshDatabase,
    services: &[ServiceUnderTest],
    addresses: &[std::net::SocketAddr],
    auth_token: &str,
    sku_names: &[String],
) -> anyhow::Result<CaseResult> {
    let case = &spec.case;
    let Variant::Library(strategy) = case.variant else {
        bail!("the instances section runs library strategies only");
    };
    let proxy = Haproxy::start(spec.setup.balance(), addresses).await?;
    let deductor =
        Arc::new(HttpDeductor::to(proxy.address(), auth_token, sku_names, strategy, case.requesters).await?);
    let admin = RawPool::connect(database, 2).await?;
    let stores: Vec<_> = services.iter().map(ServiceUnderTest::store).collect();
    let result = measure(case, &admin, Arc::clone(&deductor), sku_names, move || {
        stores
            .iter()
            .map(|store| coalescer_counters(store))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    })
    .await;
    if let Some(first) = deductor.first_failure() {
        eprintln!(
            "warning: instances {} {}: first failed HTTP request: {first}",
            spec.setup.as_str(),
            case.level
        );
    }
    admin.close().await;
    drop(proxy);
    result
}

async fn shut_down(services: Vec<ServiceUnderTest>) {
    for service in services {
        if let Err(error) = service.shutdown().await {
            eprintln!("warning: a service instance did not shut down cleanly: {error:#}");
        }
    }
}
