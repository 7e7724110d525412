//! `stockguard-bench`: runs every strategy on every available database across conflict
//! levels, audits every run in the database, and writes results.json, report.md and plots.
//! `stockguard-bench chaos` runs the fault suite instead (see `stockguard_bench::chaos`).

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use stockguard_bench::anchors::{AnchorPlan, plan_anchors, run_anchor_plan};
use stockguard_bench::audit_scaling::{AuditScalingSpec, audit_scaling_specs, run_audit_scaling_cases};
use stockguard_bench::case::{Bounds, CaseSpec, StockSizing, Transport, Variant};
use stockguard_bench::chaos::ChaosArgs;
use stockguard_bench::checkout::{CheckoutSpec, checkout_specs, run_checkout_cases};
use stockguard_bench::db;
use stockguard_bench::flash_plan::{FlashInputs, FlashPlan, plan_flash, run_flash_cases};
use stockguard_bench::galera::{GaleraSpec, galera_specs, run_galera_cases};
use stockguard_bench::instances::{InstancesSpec, instances_specs, run_instances_cases};
use stockguard_bench::pg_ha::{PgHaSpec, pg_ha_specs, run_pg_ha_cases};
use stockguard_bench::profile::{Profile, WorkloadRun, transports_for};
use stockguard_bench::report::{self, MachineInfo, Results};
use stockguard_bench::runner::run_case;
use stockguard_bench::service_memory::run_service_memory_section;
use stockguard_bench::workload::{KeyShape, Keying, LevelSpec, QuantityDist};
use stockguard_core::Strategy;
use stockguard_testkit::Backend;

/// Runs every strategy on every available database across conflict levels, audits every run
/// inside the database, and writes results.json, report.md and SVG plots to --out.
#[derive(Debug, Parser)]
#[command(
    name = "stockguard-bench",
    version,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Results directory (created if missing).
    #[arg(long, short, required = true)]
    out: Option<PathBuf>,
    /// Profile: smoke (CI), quick (`just bench`), full (`just bench-full`).
    #[arg(long, value_enum, default_value = "quick")]
    profile: Profile,
    /// Databases, comma-separated: postgres, mysql (or mariadb), sqlite (default: the profile's).
    #[arg(long, value_delimiter = ',')]
    db: Vec<Backend>,
    /// Strategies and variants, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    strategies: Vec<Variant>,
    /// Transports for the library strategies, comma-separated (default: in-process
    /// everywhere, plus http where the profile adds it). The raw baselines and the negative
    /// control bypass the library, so they always run in-process.
    #[arg(long, value_enum, value_delimiter = ',')]
    transport: Vec<Transport>,
    /// Conflict levels, repeatable: SKUS[:SKEW], SKEW = uniform | zipf:S | hot:FRACTION:TRAFFIC.
    /// Examples: 1, 100000, 10000:zipf:1.1, 1000:hot:0.01:0.9.
    #[arg(long = "level")]
    levels: Vec<String>,
    /// Conflict levels for SQLite (one writer at a time, so fewer are informative).
    #[arg(long = "sqlite-level")]
    sqlite_levels: Vec<String>,
    /// Concurrent requesters.
    #[arg(long)]
    requesters: Option<usize>,
    /// Connections per pool (library and raw alike); default: requesters, at most 64.
    #[arg(long)]
    pool_size: Option<u32>,
    /// Measured run length per case, seconds.
    #[arg(long)]
    duration_s: Option<f64>,
    /// Warm-up per case, seconds (its rate sizes the stock).
    #[arg(long)]
    warmup_s: Option<f64>,
    /// Stop each requester after this many requests (in addition to the duration).
    #[arg(long)]
    ops_per_requester: Option<u64>,
    /// Quantity distribution: fixed:N or uniform:MIN:MAX.
    #[arg(long, default_value = "fixed:1")]
    quantity: String,
    /// Initial stock per SKU: `auto` (sized from the warm-up so SKUs sell out near the end)
    /// or a fixed number of units.
    #[arg(long, default_value = "auto")]
    initial_stock: String,
    /// With `--initial-stock auto`: fraction of the expected demand to stock.
    #[arg(long, default_value_t = 0.9)]
    stock_fill: f64,
    /// Also run every in-process case with clients that send no Idempotency-Key, at every
    /// level, and report keyed / unkeyed (default: the profile's levels: quick the hot SKU,
    /// full every level, smoke none).
    #[arg(long)]
    unkeyed: bool,
    /// Share of keyed requests that retry the previous request under its key, in 0..=0.5.
    #[arg(long, default_value_t = Keying::KEYED.retry_share)]
    retry_share: f64,
    /// How keyed clients make their keys: random UUIDs (the default, and the harder case for
    /// the database's key index) or time-ordered ones.
    #[arg(long, value_enum, default_value_t = KeyShape::Uuid4)]
    client_keys: KeyShape,
    /// Seed for every request stream (default: random, printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Fail when a selected database server is unreachable (also on with CI=true or
    /// STOCKGUARD_REQUIRE_DB=1).
    #[arg(long)]
    require_db: bool,
    /// Skip the checkout workload (orders and holds), or run only it.
    #[arg(long, value_enum, default_value = "on")]
    checkout: WorkloadRun,
    /// Skip the flash-sale workload (the Redis gate against the database alone), or run only it.
    #[arg(long, value_enum, default_value = "on")]
    flash: WorkloadRun,
    /// Skip the anchors (pgbench, sysbench, redis-benchmark: report.md's ceilings), or run only them.
    #[arg(long, value_enum, default_value = "on")]
    anchors: WorkloadRun,
    /// Skip the audit-scaling cases (full vs incremental audit as the ledger grows), or run only them.
    #[arg(long, value_enum, default_value = "on")]
    audit_scaling: WorkloadRun,
    /// A hot SKU on a private 3-node Galera cluster by topology (one node, spread, SKU
    /// affinity) vs a standalone MariaDB: `on` (as `bench-full`), or `only`. Needs galera-4.
    #[arg(long, value_enum, default_value = "off")]
    galera: WorkloadRun,
    /// 1 vs 3 service instances behind haproxy (round-robin, SKU affinity): `on`, or `only`.
    #[arg(long, value_enum, default_value = "off")]
    instances: WorkloadRun,
    /// A standalone PostgreSQL vs a Patroni cluster's primary (synchronous or asynchronous
    /// standby, straight or through haproxy; `.ci/pg-ha`): `on` (as `bench-full`), or `only`.
    #[arg(long, value_enum, default_value = "off")]
    pg_ha: WorkloadRun,
    /// Skip the service's memory at idle, 100 and 1 000 open connections (a real `stockguard
    /// serve` beside this binary, on PostgreSQL), or run only it.
    #[arg(long, value_enum, default_value = "on")]
    service_memory: WorkloadRun,
    /// Ledger sizes for the audit-scaling cases, comma-separated (default: the profile's).
    #[arg(long, value_delimiter = ',')]
    audit_ledger_rows: Vec<u64>,
    /// Redis for the flash sale's gate and its ceiling.
    #[arg(long, env = "STOCKGUARD_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    redis_url: String,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// The fault suite: a real `stockguard serve` under load while faults fire, every
    /// answer checked against the database (docs/reliability.md).
    Chaos(ChaosArgs),
}

/// Most requesters one run may have (each is a task; the pool bounds the database side).
const REQUESTERS_MAX: usize = 4_096;
/// SKUs the audit-scaling ledger is spread over: 10 000 rows each at 10M.
const AUDIT_SCALING_SKUS: u64 = 1_000;
/// Largest pool the harness opens (PostgreSQL's default max_connections is 100).
const POOL_SIZE_MAX: u32 = 64;

struct Plan {
    anchors: AnchorPlan,
    specs: Vec<CaseSpec>,
    checkout: Vec<CheckoutSpec>,
    flash: FlashPlan,
    audit_scaling: Vec<AuditScalingSpec>,
    galera: Vec<GaleraSpec>,
    instances: Vec<InstancesSpec>,
    pg_ha: Vec<PgHaSpec>,
    service_memory: bool,
    results: Results,
    out: PathBuf,
}

async fn plan(args: Args) -> anyhow::Result<Plan> {
    let profile = args.profile.values();
    let seed = args.seed.unwrap_or_else(rand::random);
    let requesters = args.requesters.unwrap_or(profile.requesters);
    if !(1..=REQUESTERS_MAX).contains(&requesters) {
        bail!("--requesters must be in 1..={REQUESTERS_MAX}");
    }
    let pool_size = args
        .pool_size
        .unwrap_or_else(|| u32::try_from(requesters).unwrap_or(u32::MAX).min(POOL_SIZE_MAX));
    if !(1..=POOL_SIZE_MAX).contains(&pool_size) {
        bail!("--pool-size must be in 1..={POOL_SIZE_MAX}");
    }
    let duration_s = args.duration_s.unwrap_or(profile.duration_s);
    let warmup_s = args.warmup_s.unwrap_or(profile.warmup_s);
    if !(0.05..=3600.0).contains(&duration_s) || !(0.0..=600.0).contains(&warmup_s) {
        bail!("--duration-s must be in 0.05..=3600 and --warmup-s in 0..=600");
    }
    let quantity: QuantityDist = args.quantity.parse()?;
    let stock = match args.initial_stock.as_str() {
        "auto" => {
            if !(0.01..=10.0).contains(&args.stock_fill) {
                bail!("--stock-fill must be in 0.01..=10");
            }
            StockSizing::Auto {
                fill: args.stock_fill,
            }
        }
        units => {
            let units: i64 = units
                .parse()
                .context("--initial-stock must be `auto` or a number")?;
            stockguard_core::check_stock_level(units)?;
            StockSizing::Fixed { units }
        }
    };
    if !(0.0..=0.5).contains(&args.retry_share) {
        bail!("--retry-share must be in 0..=0.5");
    }
    let keyed = Keying {
        retry_share: args.retry_share,
        shape: args.client_keys,
        ..Keying::KEYED
    };
    let parse_levels = |raw: &[String]| {
        raw.iter()
            .map(|l| l.parse())
            .collect::<anyhow::Result<Vec<LevelSpec>>>()
    };
    let levels = parse_levels(if args.levels.is_empty() {
        &profile.levels
    } else {
        &args.levels
    })?;
    let sqlite_levels = parse_levels(if !args.sqlite_levels.is_empty() {
        &args.sqlite_levels
    } else if !args.levels.is_empty() {
        &args.levels
    } else {
        &profile.sqlite_levels
    })?;
    let variants: Vec<Variant> = if args.strategies.is_empty() {
        Variant::all().to_vec()
    } else {
        args.strategies
    };

    let required = args.require_db || stockguard_testkit::database_required();
    let wanted = if args.db.is_empty() {
        profile.databases
    } else {
        args.db
    };
    let (databases, skipped, sqlite_fallback) = db::select(wanted, required).await?;

    // In report order; duplicates in the flag collapse.
    let transports: Vec<Transport> = Transport::ALL
        .into_iter()
        .filter(|t| args.transport.contains(t))
        .collect();
    let http_levels = match &profile.http.levels {
        Some(raw) => parse_levels(raw)?,
        None => Vec::new(),
    };
    let unkeyed_levels = parse_levels(&profile.unkeyed_levels)?;
    let case_transports = |backend: Backend, level: &LevelSpec, variant: Variant| {
        transports_for(&transports, &profile.http, &http_levels, backend, level, variant)
    };

    // What every case shares; each case sets its database, path, transport and level.
    let template = CaseSpec {
        backend: Backend::MySql,
        variant: Variant::Library(Strategy::Coalesced),
        transport: Transport::InProcess,
        level: "1".parse()?,
        requesters,
        pool_size,
        warmup: Duration::from_secs_f64(warmup_s),
        bounds: Bounds {
            duration: Duration::from_secs_f64(duration_s),
            ops_per_requester: args.ops_per_requester,
        },
        quantity,
        keying: keyed,
        stock,
        seed,
    };
    let mut specs = Vec::new();
    for backend in &databases {
        let backend_levels = if *backend == Backend::Sqlite {
            &sqlite_levels
        } else {
            &levels
        };
        for level in backend_levels {
            // A strategy's transports run back to back, so the http / in-process ratio
            // compares cases minutes apart at most.
            for variant in &variants {
                if !variant.runs_on(*backend) {
                    continue;
                }
                let first_of_variant = specs.len();
                for transport in case_transports(*backend, level, *variant) {
                    specs.push(CaseSpec {
                        backend: *backend,
                        variant: *variant,
                        transport,
                        level: *level,
                        pool_size: if *backend == Backend::Sqlite {
                            pool_size.min(db::SQLITE_POOL_MAX)
                        } else {
                            pool_size
                        },
                        ..template.clone()
                    });
                }
                if args.unkeyed || unkeyed_levels.contains(level) {
                    // The unkeyed twins follow their keyed cases, so each pair runs minutes
                    // apart at most.
                    let twins: Vec<CaseSpec> = specs[first_of_variant..]
                        .iter()
                        .filter(|s| s.transport == Transport::InProcess)
                        .map(CaseSpec::unkeyed_twin)
                        .collect();
                    specs.extend(twins);
                }
            }
        }
    }

    let workloads = [
        args.checkout,
        args.flash,
        args.anchors,
        args.audit_scaling,
        args.galera,
        args.instances,
        args.pg_ha,
        args.service_memory,
    ];
    // With any `only`, the deduction cases and every workload not named `only` are dropped.
    let only = workloads.contains(&WorkloadRun::Only);
    let dropped = |run: WorkloadRun| only && run != WorkloadRun::Only;
    let runs = |run: WorkloadRun| run == WorkloadRun::Only || (run == WorkloadRun::On && !only);
    let checkout = match runs(args.checkout) {
        false => Vec::new(),
        true => checkout_specs(
            &databases,
            requesters,
            pool_size,
            Duration::from_secs_f64(duration_s),
            seed,
        ),
    };
    let mut flash = match args.flash {
        WorkloadRun::Off => FlashPlan::default(),
        _ => {
            plan_flash(FlashInputs {
                databases: &databases,
                attempts: profile.flash_attempts,
                requesters,
                pool_size,
                duration: Duration::from_secs_f64(duration_s),
                seed,
                redis_url: &args.redis_url,
                required,
                failover_on_every_database: profile.flash_failover_on_every_database,
            })
            .await?
        }
    };
    let flash_skipped = flash.skipped.take();
    let (mut anchors, anchors_skipped) = match args.anchors {
        WorkloadRun::Off => (AnchorPlan::default(), None),
        _ => {
            let flash_clients = flash.sales.first().map_or(requesters, |sale| sale.clients);
            plan_anchors(
                profile.anchors,
                &databases,
                requesters,
                flash_clients,
                &args.redis_url,
                required,
            )
            .await?
        }
    };
    let audit_rows = match args.audit_ledger_rows.is_empty() {
        true => profile.audit_ledger_rows,
        false => args.audit_ledger_rows,
    };
    let audit_scaling = match runs(args.audit_scaling) {
        false => Vec::new(),
        true => audit_scaling_specs(&databases, &audit_rows, AUDIT_SCALING_SKUS),
    };
    let galera = if runs(args.galera) {
        galera_specs(&template)
    } else {
        Vec::new()
    };
    let instances = if runs(args.instances) {
        instances_specs(&template)
    } else {
        Vec::new()
    };
    let pg_ha = if runs(args.pg_ha) {
        pg_ha_specs(&template)
    } else {
        Vec::new()
    };
    if only {
        specs.clear();
    }
    if dropped(args.flash) {
        flash.clear();
    }
    if dropped(args.anchors) {
        anchors = AnchorPlan::default();
    }

    let mut environments = BTreeMap::new();
    for backend in &databases {
        environments.insert(*backend, db::environment(*backend).await?);
    }
    let profile_name = format!("{:?}", args.profile).to_lowercase();
    Ok(Plan {
        anchors,
        specs,
        checkout,
        flash,
        audit_scaling,
        galera,
        instances,
        pg_ha,
        service_memory: runs(args.service_memory),
        out: args.out.context("--out is required")?,
        results: Results {
            started_at: chrono::Utc::now().to_rfc3339(),
            command: std::env::args().collect::<Vec<_>>().join(" "),
            profile: profile_name,
            seed,
            machine: MachineInfo::detect(),
            databases: environments,
            skipped_databases: skipped,
            sqlite_fallback,
            flash_skipped,
            anchors_skipped,
            ..Results::default()
        },
    })
}

async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let Plan {
        anchors,
        specs,
        checkout,
        flash,
        audit_scaling,
        galera,
        instances,
        pg_ha,
        service_memory,
        mut results,
        out,
    } = plan(args).await?;
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let seed = results.seed;
    eprintln!(
        "stockguard-bench: profile {} · seed {seed} (rerun with --seed {seed}) · {} cases on {} · results in {}",
        results.profile,
        specs.len(),
        results
            .databases
            .keys()
            .map(|b| b.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        out.display()
    );
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(specs.len() as u64), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    let log = |line: String| {
        if bar.is_hidden() {
            eprintln!("{line}");
        } else {
            bar.println(line);
        }
    };
    let http_cases = specs.iter().filter(|s| s.transport == Transport::Http).count();
    if http_cases > 0 {
        eprintln!(
            "stockguard-bench: {http_cases} cases over http: the service runs in this process on its own \
             runtime and shares the machine's cores with the requesters and the database"
        );
    }
    let started = Instant::now();
    run_anchor_plan(anchors, &log, &mut results).await;
    for spec in specs {
        let label = format!(
            "{} {} {} x{}",
            spec.backend,
            spec.path_name(),
            spec.level,
            spec.requesters
        );
        bar.set_message(label.clone());
        match run_case(spec).await {
            Ok(case) => {
                log(format!(
                    "{label:<52} {:>9.0} ok/s {:>8.0} refused/s  p99 {:>8.2} ms  conflict {:>3.0}%  audit {}",
                    case.successes_per_s,
                    case.refused_per_s,
                    case.latency_us_p99 as f64 / 1000.0,
                    case.conflict_rate * 100.0,
                    case.audit.verdict()
                ));
                results.cases.push(case);
            }
            Err(error) => {
                let message = format!("{label} (seed {seed}): {error:#}");
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
        bar.inc(1);
    }
    run_checkout_cases(checkout, &log, &mut results).await;
    run_flash_cases(flash, &log, &mut results).await;
    run_audit_scaling_cases(audit_scaling, &log, &mut results).await;
    run_galera_cases(galera, &log, &mut results).await;
    run_instances_cases(instances, &log, &mut results).await;
    run_pg_ha_cases(pg_ha, &log, &mut results).await;
    if service_memory {
        run_service_memory_section(&out, &log, &mut results).await;
    }
    bar.finish_and_clear();

    let json = serde_json::to_string_pretty(&results)?;
    std::fs::write(out.join("results.json"), json).context("writing results.json")?;
    report::write_markdown(&results, &out.join("report.md"))?;
    let plots = report::write_plots(&results, &out)?;
    eprintln!(
        "wrote {}/results.json, report.md and {} plots in {:.0} s",
        out.display(),
        plots.len(),
        started.elapsed().as_secs_f64()
    );

    let failures = stockguard_bench::verdict::failures(&results);
    for failure in &failures {
        eprintln!("{failure}");
    }
    let failed = !failures.is_empty();
    if failed {
        eprintln!(
            "stockguard-bench: FAILED (seed {seed}); see {}/report.md",
            out.display()
        );
        Ok(ExitCode::FAILURE)
    } else {
        eprintln!("stockguard-bench: every audit passed (seed {seed})");
        Ok(ExitCode::SUCCESS)
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("stockguard-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let ran = match args.command {
        Some(Command::Chaos(chaos)) => runtime.block_on(stockguard_bench::chaos::run(chaos)),
        None => runtime.block_on(run(args)),
    };
    match ran {
        Ok(code) => code,
        Err(error) => {
            eprintln!("stockguard-bench: {error:#}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
#[path = "main_tests.rs"]
mod tests;
