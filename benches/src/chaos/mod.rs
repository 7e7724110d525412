//! `stockguard-bench chaos`: a Jepsen-style fault suite. A real `stockguard serve` process
//! takes keyed deductions and restocks from concurrent clients while a seeded schedule
//! kills its database sessions, pauses, kills and restarts it, restarts and crashes the
//! database server, resets, blackholes and delays the connection through a proxy, starves
//! the server of connection slots and abandons requests. Every request is recorded; after
//! quiescence every ambiguous answer is resolved by its key, and a checker judges the
//! history against the database. See docs/reliability.md.
//!
//! Modules, in dependency order (no cycles): `history` (records and what an answer means),
//! `checker` (the verdict, pure), `controls` (negative controls), `snapshot` (reading the
//! database), `server` (private server or cluster, and proxy), `gate` (the gate's Redis, in `+gate`
//! cells), `service` (the process), `client` (HTTP),
//! `load`, `resolve`, `schedule`, `inject`, `cell`, `report`, and this CLI.

pub mod cell;
pub mod checker;
pub mod client;
pub mod controls;
pub mod gate;
pub mod history;
pub mod inject;
pub mod load;
pub mod report;
pub mod resolve;
pub mod schedule;
pub mod server;
pub mod service;
pub mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::ValueEnum;
use stockguard_core::Strategy;
use stockguard_testkit::Backend;

use cell::{CellOptions, CellSpec, run_cell};
use report::RunReport;
use server::Cluster;

/// Options of `stockguard-bench chaos`.
#[derive(Debug, Clone, clap::Args)]
pub struct ChaosArgs {
    /// Output directory (report.json, report.md, one directory per cell with history.jsonl,
    /// faults.jsonl and the service's log).
    #[arg(long, short)]
    pub out: PathBuf,
    /// smoke: guarded and coalesced on PostgreSQL and MariaDB, coalesced behind the Redis
    /// gate on PostgreSQL, coalesced on a 3-node Galera cluster, coalesced on three instances
    /// behind haproxy on PostgreSQL, and coalesced on PostgreSQL HA (Patroni), one seed, 20 s
    /// each (CI); full: every strategy on PostgreSQL and MariaDB plus SQLite, coalesced
    /// behind the gate on each, coalesced, guarded and pessimistic on Galera, coalesced
    /// behind haproxy on each server, and coalesced and guarded on PostgreSQL HA, 3 seeds,
    /// 60 s each.
    #[arg(long, value_enum, default_value = "smoke")]
    pub profile: ChaosProfile,
    /// Run only these cells, `db:strategy` (e.g. `postgres:guarded`, `mariadb:coalesced`,
    /// `sqlite:pessimistic`, `galera:coalesced`, `pgha:coalesced`, `postgres:coalesced+haproxy`),
    /// with `+gate` for the Redis admission gate in front
    /// (`postgres:coalesced+gate`); repeatable. Replaces the profile's cells.
    #[arg(long = "cell")]
    pub cells: Vec<String>,
    /// The first seed (default: random, printed). Seed n of a run is this plus n.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Seeds per cell (default: the profile's).
    #[arg(long)]
    pub seeds: Option<u64>,
    /// Seconds of load per cell (default: the profile's); every applicable fault fires at
    /// least once however short.
    #[arg(long)]
    pub duration_s: Option<u64>,
    /// The `stockguard` binary (default: the one beside this binary).
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
    /// Negative control: the client reports every lost answer as a definite refusal, as a
    /// service that answers a lost COMMIT with "nothing changed" would. The run must fail.
    #[arg(long)]
    pub mutant: bool,
}

/// A named set of cells, seeds and durations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ChaosProfile {
    /// CI: guarded and coalesced on PostgreSQL and MariaDB, and coalesced behind the Redis
    /// gate on PostgreSQL; one seed, 20 s each.
    Smoke,
    /// Every strategy on PostgreSQL and MariaDB, plus SQLite, and coalesced behind the gate
    /// on each; 3 seeds, 60 s each.
    Full,
}

/// A cell before its seed: the database, the strategy, and the gate or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    /// The database.
    pub backend: Backend,
    /// On a private cluster of `backend`'s kind rather than one server.
    pub cluster: Option<Cluster>,
    /// The strategy.
    pub strategy: Strategy,
    /// Behind the Redis admission gate.
    pub gated: bool,
    /// Service instances (3 behind haproxy, or 1).
    pub instances: usize,
}

impl Cell {
    fn on(backend: Backend, strategy: Strategy) -> Self {
        Self {
            backend,
            cluster: None,
            strategy,
            gated: false,
            instances: 1,
        }
    }

    fn on_cluster(cluster: Cluster, strategy: Strategy) -> Self {
        Self {
            cluster: Some(cluster),
            ..Self::on(cluster.backend(), strategy)
        }
    }

    fn galera(strategy: Strategy) -> Self {
        Self::on_cluster(Cluster::Galera, strategy)
    }

    fn gated(self) -> Self {
        Self { gated: true, ..self }
    }

    fn behind_haproxy(self) -> Self {
        Self {
            instances: cell::HAPROXY_INSTANCES,
            ..self
        }
    }
}

/// The strategies the Galera cells run: the one the Galera bench recommends (`coalesced`,
/// fewest certification retries), the plain statement, and the seed's lock.
const GALERA_STRATEGIES: [Strategy; 3] = [Strategy::Coalesced, Strategy::Guarded, Strategy::Pessimistic];
/// The strategies the PostgreSQL HA cells run: the batch, and the plain statement.
const PG_HA_STRATEGIES: [Strategy; 2] = [Strategy::Coalesced, Strategy::Guarded];

impl ChaosProfile {
    fn cells(self) -> Vec<Cell> {
        match self {
            ChaosProfile::Smoke => [Backend::Postgres, Backend::MySql]
                .into_iter()
                .flat_map(|db| [Cell::on(db, Strategy::Guarded), Cell::on(db, Strategy::Coalesced)])
                .chain([
                    Cell::on(Backend::Postgres, Strategy::Coalesced).gated(),
                    Cell::galera(Strategy::Coalesced),
                    Cell::on(Backend::Postgres, Strategy::Coalesced).behind_haproxy(),
                    Cell::on_cluster(Cluster::PgHa, Strategy::Coalesced),
                ])
                .collect(),
            ChaosProfile::Full => Backend::ALL
                .into_iter()
                .flat_map(|db| {
                    Strategy::ALL
                        .into_iter()
                        .filter(move |s| db != Backend::Sqlite || *s != Strategy::Sharded)
                        .map(move |s| Cell::on(db, s))
                        .chain([Cell::on(db, Strategy::Coalesced).gated()])
                })
                .chain(GALERA_STRATEGIES.map(Cell::galera))
                .chain(PG_HA_STRATEGIES.map(|s| Cell::on_cluster(Cluster::PgHa, s)))
                .chain(
                    [Backend::Postgres, Backend::MySql]
                        .map(|db| Cell::on(db, Strategy::Coalesced).behind_haproxy()),
                )
                .collect(),
        }
    }

    fn seeds(self) -> u64 {
        match self {
            ChaosProfile::Smoke => 1,
            ChaosProfile::Full => 3,
        }
    }

    fn duration_s(self) -> u64 {
        match self {
            ChaosProfile::Smoke => 20,
            ChaosProfile::Full => 60,
        }
    }
}

/// Parses `db:strategy`, with `+gate` for a gated cell or `+haproxy` for three instances
/// behind haproxy; `galera:strategy` runs on a private Galera cluster.
pub fn parse_cell(raw: &str) -> anyhow::Result<Cell> {
    let (raw, haproxy) = match raw.strip_suffix("+haproxy") {
        Some(cell) => (cell, true),
        None => (raw, false),
    };
    let (raw, gated) = match raw.strip_suffix("+gate") {
        Some(cell) => (cell, true),
        None => (raw, false),
    };
    let (db, strategy) = raw
        .split_once(':')
        .with_context(|| format!("--cell {raw:?}: expected db:strategy, e.g. postgres:guarded"))?;
    let strategy: Strategy = strategy.parse()?;
    let cell = match db {
        "galera" => Cell::galera(strategy),
        "pgha" => Cell::on_cluster(Cluster::PgHa, strategy),
        _ => Cell::on(db.parse().map_err(anyhow::Error::msg)?, strategy),
    };
    if cell.backend == Backend::Sqlite && strategy == Strategy::Sharded {
        bail!("sharded does not run on SQLite");
    }
    if haproxy && (gated || cell.backend == Backend::Sqlite) {
        bail!("+haproxy runs on a database server, without the gate");
    }
    let cell = if gated { cell.gated() } else { cell };
    Ok(if haproxy { cell.behind_haproxy() } else { cell })
}

/// Runs the chaos matrix; exit status 0 only when every cell ran and found nothing wrong.
pub async fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let began = Instant::now();
    let cells = if args.cells.is_empty() {
        args.profile.cells()
    } else {
        args.cells
            .iter()
            .map(|c| parse_cell(c))
            .collect::<anyhow::Result<_>>()?
    };
    let first_seed = args.seed.unwrap_or_else(rand::random);
    let seed_count = args.seeds.unwrap_or(args.profile.seeds()).clamp(1, 100);
    let duration_s = args
        .duration_s
        .unwrap_or(args.profile.duration_s())
        .clamp(1, 3_600);
    let service_bin = service::find_binary(args.service_bin.as_deref())?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let seeds: Vec<u64> = (0..seed_count).map(|n| first_seed.wrapping_add(n)).collect();
    let profile = if args.cells.is_empty() {
        format!("{:?}", args.profile).to_lowercase()
    } else {
        "cells".to_owned()
    };
    eprintln!(
        "stockguard-bench chaos: {profile} · {} cells × {} seeds (first {first_seed}; rerun with --seed {first_seed}) · \
         {duration_s} s each · {} · results in {}",
        cells.len(),
        seeds.len(),
        service_bin.display(),
        args.out.display()
    );
    let mut report = RunReport {
        started_at: chrono::Utc::now().to_rfc3339(),
        command: std::env::args().collect::<Vec<_>>().join(" "),
        profile,
        seeds: seeds.clone(),
        total_s: 0.0,
        cells: Vec::new(),
        cell_errors: Vec::new(),
    };
    for &seed in &seeds {
        for cell in &cells {
            let spec = CellSpec {
                backend: cell.backend,
                cluster: cell.cluster,
                strategy: cell.strategy,
                gated: cell.gated,
                instances: cell.instances,
                seed,
                duration_s,
            };
            let options = CellOptions {
                service_bin: service_bin.clone(),
                dir: args.out.join(format!(
                    "{}-{}{}{}-s{seed}",
                    spec.db_label(),
                    spec.strategy,
                    if spec.gated { "-gate" } else { "" },
                    if spec.instances > 1 { "-haproxy" } else { "" }
                )),
                mutant: args.mutant,
            };
            match run_cell(spec, &options).await {
                Ok(cell) => {
                    if !cell.metrics_missing.is_empty() {
                        let message = format!(
                            "{} (seed {seed}): /metrics lacks metrics docs/ops names: {}",
                            cell.cell,
                            cell.metrics_missing.join(", ")
                        );
                        eprintln!("CELL FAILED: {message}");
                        report.cell_errors.push(message);
                    }
                    if !cell.passed() {
                        eprintln!(
                            "VIOLATIONS in {} (seed {seed}): {}; reproduce: {}",
                            cell.cell,
                            cell.findings
                                .violations
                                .iter()
                                .map(|v| format!("{:?} × {}", v.kind, v.count))
                                .collect::<Vec<_>>()
                                .join(", "),
                            cell.reproduce
                        );
                    }
                    report.cells.push(cell);
                }
                Err(error) => {
                    let message = format!("{} (seed {seed}): {error:#}", spec.name());
                    eprintln!("CELL FAILED: {message}");
                    report.cell_errors.push(message);
                }
            }
        }
    }
    report.total_s = began.elapsed().as_secs_f64();
    report::write(&report, &args.out)?;
    let verdict = if report.passed() {
        "passed: 0 violations"
    } else {
        "FAILED"
    };
    eprintln!(
        "stockguard-bench chaos: {verdict} in {:.0} s (seed {first_seed}); see {}/report.md",
        report.total_s,
        args.out.display()
    );
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_have_the_cells_the_issue_asks_for() {
        // Plus one gated cell, one on Galera, one with three instances behind haproxy, and one
        // on PostgreSQL HA.
        assert_eq!(ChaosProfile::Smoke.cells().len(), 8);
        // 6 strategies on each server, 5 on SQLite (no sharded), coalesced behind the gate on
        // each, 3 strategies on Galera, coalesced behind haproxy on each server, and 2 strategies
        // on PostgreSQL HA.
        assert_eq!(ChaosProfile::Full.cells().len(), 27);
        assert_eq!(
            parse_cell("mariadb:coalesced").unwrap(),
            Cell::on(Backend::MySql, Strategy::Coalesced)
        );
        assert_eq!(
            parse_cell("pg:no_wait").unwrap(),
            Cell::on(Backend::Postgres, Strategy::NoWait)
        );
        assert_eq!(
            parse_cell("postgres:coalesced+gate").unwrap(),
            Cell::on(Backend::Postgres, Strategy::Coalesced).gated()
        );
        let galera = parse_cell("galera:guarded").unwrap();
        assert!(galera.cluster == Some(Cluster::Galera) && galera.backend == Backend::MySql && !galera.gated);
        let pg_ha = parse_cell("pgha:coalesced").unwrap();
        assert!(pg_ha.cluster == Some(Cluster::PgHa) && pg_ha.backend == Backend::Postgres);
        assert_eq!(parse_cell("pg:coalesced+haproxy").unwrap().instances, 3);
        assert!(parse_cell("pg:coalesced+gate+haproxy").is_err());
        assert!(parse_cell("sqlite:guarded+haproxy").is_err());
        assert!(parse_cell("sqlite:sharded").is_err());
        assert!(parse_cell("guarded").is_err());
        assert!(parse_cell("oracle:guarded").is_err());
    }
}
