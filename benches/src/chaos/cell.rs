//! One cell: one strategy on one database, one seed. Starts a private server behind the
//! proxy (or a SQLite file), a real `stockguard serve`, the load and the fault schedule;
//! then quiescence, resolution, replay probes, `stockguard audit`, and the checker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use stockguard_api::metrics::named as metrics;
use stockguard_core::Strategy;
use stockguard_testkit::{Backend, TestSqliteFile};
use tokio::sync::watch;

use super::checker::{self, Example, Findings, SkuState, ViolationKind};
use super::client::{Api, Knobs};
use super::gate::{self, ChaosRedis};
use super::history::{Recorder, write_jsonl};
use super::inject::{Env, FaultEvent, inject};
use super::load::{self, LoadPlan};
use super::resolve::{self, Quiescence, ResolveSummary};
use super::schedule::{self, FaultKind};
use super::server::{Cluster, ServerUnderTest};
use super::service::{Service, ServiceConfig, free_port};
use super::snapshot;
use crate::haproxy::{Balance, Haproxy};

/// The service's request timeout; its engine deadline is 90 % of it. Short, so that faults
/// turn into answers (and quiescence comes) quickly.
pub const REQUEST_TIMEOUT: Duration = Duration::from_millis(3_000);
/// Patient clients wait this much longer than the service, so the service answers them.
const CLIENT_MARGIN: Duration = Duration::from_millis(2_000);
/// Timeout of resolution retries and probes.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Instances in a `+haproxy` cell.
pub const HAPROXY_INSTANCES: usize = 3;
/// Each service's pool: one instance alone, or each of a `+haproxy` cell's (together they
/// stay below the private server's 24 connection slots, with room for the runner's own).
const POOL_SIZE: u32 = 8;
const POOL_SIZE_PER_HAPROXY_INSTANCE: u32 = 4;

/// Which cell, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CellSpec {
    /// The database.
    pub backend: Backend,
    /// On a private cluster of `backend`'s kind (Galera, PostgreSQL HA) rather than one server.
    pub cluster: Option<Cluster>,
    /// The strategy.
    pub strategy: Strategy,
    /// With the Redis admission gate in front (on a private Redis; `redis_kill` applies).
    pub gated: bool,
    /// Service instances: 1, or [`HAPROXY_INSTANCES`] behind a private haproxy with the
    /// recommended configuration (SKU affinity), the service faults hitting one at a time.
    pub instances: usize,
    /// The seed of the load and the fault schedule.
    pub seed: u64,
    /// Planned load time (at least one round of every applicable fault runs).
    pub duration_s: u64,
}

impl CellSpec {
    /// The database's name in cells: `postgres`, `mysql`, `sqlite`, `galera` or `pgha`.
    pub fn db_label(&self) -> String {
        match self.cluster {
            Some(cluster) => cluster.as_str().to_owned(),
            None => self.backend.to_string(),
        }
    }

    /// `db:strategy` (`+gate` when gated), as `--cell` takes it.
    pub fn name(&self) -> String {
        format!(
            "{}:{}{}{}",
            self.db_label(),
            self.strategy,
            if self.gated { "+gate" } else { "" },
            if self.instances > 1 { "+haproxy" } else { "" }
        )
    }
}

/// What the runner needs besides the cell.
#[derive(Debug, Clone)]
pub struct CellOptions {
    /// The `stockguard` binary.
    pub service_bin: PathBuf,
    /// The cell's output directory.
    pub dir: PathBuf,
    /// Negative control: the client reports lost answers as definite refusals.
    pub mutant: bool,
}

/// How often a fault kind fired and was observed in one cell.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct FaultCount {
    /// Injected.
    pub fired: u64,
    /// With an observed effect.
    pub observed: u64,
    /// Σ effect counts (sessions, connections, abandoned requests, restarts).
    pub effect: u64,
}

/// Everything one cell found.
#[derive(Debug, Clone, Serialize)]
pub struct CellReport {
    /// The cell.
    pub spec: CellSpec,
    /// `db:strategy`.
    pub cell: String,
    /// Wall-clock start (RFC 3339).
    pub started_at: String,
    /// Seconds of load under faults.
    pub load_s: f64,
    /// Seconds for the whole cell, server start to verdict.
    pub total_s: f64,
    /// How the operations ended.
    pub findings: Findings,
    /// The resolution phase.
    pub resolve: ResolveSummary,
    /// Quiescence before it.
    pub quiescence: Quiescence,
    /// Per fault kind.
    pub fault_counts: BTreeMap<FaultKind, FaultCount>,
    /// Every fault, in order.
    pub faults: Vec<FaultEvent>,
    /// Graceful shutdowns under load: drain times (ms).
    pub drains_ms: Vec<u64>,
    /// `stockguard audit`'s exit code and output.
    pub audit_exit: Option<i32>,
    /// Its output.
    pub audit_output: String,
    /// The SKUs at the end.
    pub skus: Vec<SkuState>,
    /// Ledger rows at the end.
    pub ledger_rows: usize,
    /// How to run this cell again.
    pub reproduce: String,
    /// Metrics docs/ops (dashboard, alert rules) names that the service's `/metrics` lacked
    /// at the end of the cell.
    pub metrics_missing: Vec<String>,
}

impl CellReport {
    /// True when the cell found nothing wrong.
    pub fn passed(&self) -> bool {
        self.findings.violation_count() == 0 && self.metrics_missing.is_empty()
    }
}

/// Runs one cell; its files go to `options.dir`.
pub async fn run_cell(spec: CellSpec, options: &CellOptions) -> anyhow::Result<CellReport> {
    let begun = Instant::now();
    let started_at = chrono::Utc::now().to_rfc3339();
    std::fs::create_dir_all(&options.dir).with_context(|| format!("creating {}", options.dir.display()))?;
    let sqlite_file;
    let mut server = None;
    let (service_url, direct_url) = if spec.backend == Backend::Sqlite {
        sqlite_file = TestSqliteFile::new();
        let path = sqlite_file.path().display().to_string();
        (path.clone(), path)
    } else {
        let started = ServerUnderTest::start(spec.backend, spec.cluster).await?;
        let urls = (started.service_url(), started.direct_url());
        server = Some(started);
        urls
    };
    let mut redis = if spec.gated {
        Some(ChaosRedis::start().await?)
    } else {
        None
    };
    let token = format!("chaos-{}", uuid::Uuid::new_v4().simple());
    let instances = spec.instances.max(1);
    let mut services = Vec::with_capacity(instances);
    for index in 0..instances {
        let log = match instances {
            1 => options.dir.join("service.log"),
            _ => options.dir.join(format!("service{index}.log")),
        };
        let service = Service::start(ServiceConfig {
            bin: options.service_bin.clone(),
            port: free_port()?,
            database_url: service_url.clone(),
            strategy: spec.strategy,
            token: token.clone(),
            log,
            request_timeout: REQUEST_TIMEOUT,
            pool_size: if instances == 1 {
                POOL_SIZE
            } else {
                POOL_SIZE_PER_HAPROXY_INSTANCE
            },
            acquire_timeout: Duration::from_millis(1_000),
            lock_timeout: Duration::from_millis(1_000),
            shutdown_grace: Duration::from_millis(5_000),
            redis_url: redis.as_ref().map(ChaosRedis::url),
        })
        .await
        .context("starting stockguard serve")?;
        services.push(service);
    }
    // The recommended deployment in front of several: docs/deploy/haproxy.cfg's balance.
    let haproxy = match instances {
        1 => None,
        _ => {
            let addresses = services
                .iter()
                .map(|service| std::net::SocketAddr::from(([127, 0, 0, 1], service.config().port)))
                .collect::<Vec<_>>();
            Some(Haproxy::start(Balance::SkuAffinity, &addresses).await?)
        }
    };
    let base_url = match &haproxy {
        Some(proxy) => format!("http://{}", proxy.address()),
        None => services[0].base_url(),
    };

    let started = Instant::now();
    let recorder = Arc::new(Recorder::new());
    let api = Arc::new(Api::new(
        base_url,
        &token,
        started,
        Arc::clone(&recorder),
        options.mutant,
    )?);
    let key_prefix = format!("{}-{}-s{}", spec.db_label(), spec.strategy, spec.seed);
    let patient_ms = u64::try_from((REQUEST_TIMEOUT + CLIENT_MARGIN).as_millis()).unwrap_or(u64::MAX);
    let plan = Arc::new(LoadPlan::standard(key_prefix, patient_ms));
    for (index, sku) in plan.skus.iter().enumerate() {
        let stock = if index == 0 {
            plan.hot_stock
        } else {
            plan.cold_stock
        };
        api.create_sku(sku, stock).await?;
    }

    let knobs = Arc::new(Knobs::default());
    let (stop, stopped) = watch::channel(false);
    let load = tokio::spawn(load::run(
        Arc::clone(&api),
        Arc::clone(&knobs),
        Arc::clone(&plan),
        spec.seed,
        stopped,
    ));
    let kinds = FaultKind::for_cell(spec.backend, spec.gated, spec.cluster);
    let schedule = schedule::plan(&kinds, Duration::from_secs(spec.duration_s), spec.seed);
    let mut faults = Vec::new();
    let mut crashes = Vec::new();
    let label = format!("{} seed {}", spec.name(), spec.seed);
    for (index, planned) in schedule.iter().enumerate() {
        wait_watching(&mut services, &mut crashes, started, planned.at_ms).await?;
        // Service faults take the instances in turn; only one is down at a time.
        let target = index % services.len();
        let mut env = Env {
            service: &mut services[target],
            server: server.as_mut(),
            knobs: &knobs,
            redis: redis.as_mut(),
            started,
        };
        let event = inject(&mut env, planned).await;
        eprintln!(
            "[{:>7.3}s] {label}: {} {} — {}{}",
            event.start_ms as f64 / 1000.0,
            event.kind.as_str(),
            if event.observed { "observed" } else { "NO EFFECT" },
            event.effect,
            event
                .error
                .as_deref()
                .map(|e| format!(" (error: {e})"))
                .unwrap_or_default()
        );
        faults.push(event);
    }
    let end_ms = spec.duration_s * 1000;
    wait_watching(&mut services, &mut crashes, started, end_ms).await?;
    stop.send_replace(true);
    let sent = load.await.context("the load panicked")?;
    let load_s = started.elapsed().as_secs_f64();
    watch_crash(&mut services, &mut crashes).await?;

    let quiescence = resolve::quiesce(server.as_ref(), REQUEST_TIMEOUT).await?;
    let mut resolve = resolve::resolve(&api, RESOLVE_TIMEOUT).await;
    resolve.probes = resolve::probe_replays(&api, spec.seed, RESOLVE_TIMEOUT).await;
    watch_crash(&mut services, &mut crashes).await?;
    // After a run under every fault, every series the dashboard and the alerts read must be
    // there: an operator gets the same service on a bad day.
    let named = metrics::named_in_ops_docs().context("reading docs/ops")?;
    let mut metrics_missing = Vec::new();
    for service in &services {
        for missing in metrics::missing_from(&named, &service.scrape_metrics().await?) {
            if !metrics_missing.contains(&missing) {
                metrics_missing.push(missing);
            }
        }
    }
    if !metrics_missing.is_empty() {
        eprintln!("{label}: /metrics lacks what docs/ops names: {metrics_missing:?}");
    }
    if spec.gated {
        // The reconciler's grace for stranded records, then passes to pick up what is left.
        tokio::time::sleep(gate::unknown_grace(REQUEST_TIMEOUT) + 3 * gate::RECONCILE_INTERVAL).await;
    }
    for service in &mut services {
        service.stop().await?;
    }
    drop(haproxy);

    let (audit_exit, audit_output) = snapshot::run_audit(&options.service_bin, &direct_url).await?;
    let db = snapshot::read_state(spec.backend, &direct_url)
        .await
        .context("reading the database for the checker")?;
    let records = recorder.snapshot();
    let mut findings = checker::check(&records, &db);
    if let Some(redis) = redis.take() {
        // The service has stopped; its reconciler's last passes ran during the wait before.
        for problem in redis.counter_problems(&db.skus).await? {
            findings.add(
                ViolationKind::GateDrift,
                Example {
                    key: None,
                    detail: problem,
                    history: Vec::new(),
                },
            );
        }
        drop(redis);
    }
    runner_violations(
        &mut findings,
        &faults,
        &crashes,
        audit_exit,
        &audit_output,
        &quiescence,
    );

    write_jsonl(&options.dir.join("history.jsonl"), &records)?;
    // The database as the checker saw it, for the post-mortem of a violation.
    write_jsonl(&options.dir.join("ledger.jsonl"), &db.ledger)?;
    write_jsonl(&options.dir.join("faults.jsonl"), &faults)?;
    eprintln!(
        "{label}: {sent} requests under faults in {load_s:.1} s; {} operations, {} violations",
        findings.stats.ops,
        findings.violation_count()
    );
    let report = CellReport {
        spec,
        cell: spec.name(),
        started_at,
        load_s,
        total_s: begun.elapsed().as_secs_f64(),
        fault_counts: count_faults(&faults),
        drains_ms: faults.iter().filter_map(|f| f.drain_ms).collect(),
        findings,
        resolve,
        quiescence,
        faults,
        audit_exit,
        audit_output,
        skus: db.skus,
        ledger_rows: db.ledger.len(),
        reproduce: reproduce(&spec, &options.dir, options.mutant),
        metrics_missing,
    };
    std::fs::write(
        options.dir.join("cell.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    drop(server);
    Ok(report)
}

/// Sleeps until `at_ms` after `started`, checking every 100 ms that the services live.
async fn wait_watching(
    services: &mut [Service],
    crashes: &mut Vec<String>,
    started: Instant,
    at_ms: u64,
) -> anyhow::Result<()> {
    let at = started + Duration::from_millis(at_ms);
    while Instant::now() < at {
        watch_crash(services, crashes).await?;
        tokio::time::sleep((at - Instant::now()).min(Duration::from_millis(100))).await;
    }
    Ok(())
}

async fn watch_crash(services: &mut [Service], crashes: &mut Vec<String>) -> anyhow::Result<()> {
    for service in services {
        if let Some(crash) = service.check_crashed().await? {
            let line = format!(
                "pid {} exited with {} without being told to",
                crash.pid, crash.status
            );
            eprintln!("CRASH: {line}");
            crashes.push(line);
        }
    }
    Ok(())
}

/// The violations only the runner can see.
fn runner_violations(
    findings: &mut Findings,
    faults: &[FaultEvent],
    crashes: &[String],
    audit_exit: Option<i32>,
    audit_output: &str,
    quiescence: &Quiescence,
) {
    let plain = |detail: String| Example {
        key: None,
        detail,
        history: Vec::new(),
    };
    for crash in crashes {
        findings.add(ViolationKind::Crash, plain(crash.clone()));
    }
    for fault in faults {
        if let Some(unclean) = &fault.unclean_exit {
            findings.add(
                ViolationKind::Crash,
                plain(format!("graceful shutdown (SIGTERM): {unclean}")),
            );
        }
        if !fault.observed {
            findings.add(
                ViolationKind::FaultWithoutEffect,
                plain(format!(
                    "{} at {} ms: {}{}",
                    fault.kind.as_str(),
                    fault.start_ms,
                    fault.effect,
                    fault
                        .error
                        .as_deref()
                        .map(|e| format!(" (error: {e})"))
                        .unwrap_or_default()
                )),
            );
        }
    }
    if audit_exit != Some(0) {
        findings.add(
            ViolationKind::AuditFailed,
            plain(format!(
                "stockguard audit exited with {audit_exit:?}: {}",
                audit_output.trim()
            )),
        );
    }
    if quiescence.busy_sessions > 0 {
        findings.add(
            ViolationKind::Unresolved,
            plain(format!(
                "{} sessions were still busy {} ms after the load stopped; resolution ran anyway",
                quiescence.busy_sessions, quiescence.waited_ms
            )),
        );
    }
}

fn count_faults(faults: &[FaultEvent]) -> BTreeMap<FaultKind, FaultCount> {
    let mut counts: BTreeMap<FaultKind, FaultCount> = BTreeMap::new();
    for fault in faults {
        let count = counts.entry(fault.kind).or_default();
        count.fired += 1;
        count.observed += u64::from(fault.observed);
        count.effect += fault.effect_count;
    }
    counts
}

fn reproduce(spec: &CellSpec, dir: &Path, mutant: bool) -> String {
    format!(
        "stockguard-bench chaos --cell {} --seed {} --duration-s {} --out {}{}",
        spec.name(),
        spec.seed,
        spec.duration_s,
        dir.parent().unwrap_or(dir).display(),
        if mutant { " --mutant" } else { "" }
    )
}
