//! `stockguard`: serve the HTTP API, migrate, audit.

mod audit_command;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::builder::BoolishValueParser;
use clap::{Parser, Subcommand};
use stockguard_api::config::{DatabaseArgs, ServeArgs};
use stockguard_api::{CliSettings, Settings, open_existing_store, open_store, server, telemetry};
use stockguard_core::InventoryStore;

#[derive(Debug, Parser)]
#[command(
    name = "stockguard",
    version,
    about = "Oversell-proof inventory deduction service",
    after_help = "Each command lists its own flags: stockguard <COMMAND> --help"
)]
struct Cli {
    /// Log JSON lines instead of text (filter with RUST_LOG).
    #[arg(long, global = true, env = "STOCKGUARD_JSON_LOGS", value_parser = BoolishValueParser::new())]
    json_logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Apply migrations and serve the HTTP API until SIGTERM or Ctrl-C.
    Serve {
        #[command(flatten)]
        database: DatabaseArgs,
        // Boxed: the service's flags outweigh every other command's by far.
        #[command(flatten)]
        serve: Box<ServeArgs>,
        /// Allow a non-loopback bind address without an auth token (anyone who can reach
        /// the port can then deduct and restock).
        #[arg(long)]
        insecure: bool,
    },
    /// Apply the database migrations and exit.
    Migrate {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Reconcile every SKU (stock >= 0, initial + sum of ledger deltas = stock); print each
    /// discrepancy and exit with status 1 if there is any. By default incremental: it reads
    /// only the ledger rows after the checkpoint the last audit stored, then stores a new
    /// one (its only write). Never creates or migrates a database.
    Audit {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Read every ledger row, and check orders and holds too. Catches a change to a row
        /// the checkpoint already covers, which the incremental audit cannot. Writes nothing.
        #[arg(long)]
        full: bool,
    },
    /// Holds: `holds sweep` expires every hold past its expiry now, in batches (what the
    /// service's sweeper does every `hold_sweep_interval_ms`), and prints how many.
    Holds {
        #[command(subcommand)]
        command: HoldsCommand,
    },
    /// Apply the migrations, then print as JSON what the server really does (product,
    /// version, isolation, Galera, and each locking clause tried on a row another session
    /// holds) and which strategies it refuses because of it.
    Probe {
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// Print the OpenAPI document (the one checked into docs/openapi.json).
    Openapi,
    /// Benchmarks live in the harness: run `just bench` (see benches/).
    Bench,
}

#[derive(Debug, Subcommand)]
enum HoldsCommand {
    /// Expire every hold past its expiry, in batches; exits 0 with the count. Never creates
    /// or migrates a database.
    Sweep {
        #[command(flatten)]
        database: DatabaseArgs,
        /// Holds per transaction (1..=1000).
        #[arg(long, default_value_t = stockguard_api::config::DEFAULT_HOLD_SWEEP_BATCH)]
        batch: u32,
    },
}

/// What a command that opens the database does, once its settings are resolved.
#[derive(Debug, Clone, Copy)]
enum Action {
    Serve { insecure: bool },
    Migrate,
    Probe,
    Audit { full: bool },
    SweepHolds { batch: u32 },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let database_only = |database| CliSettings {
        database,
        serve: ServeArgs::default(),
        json_logs: cli.json_logs,
    };
    let (given, action) = match cli.command {
        Command::Openapi => {
            print!("{}", stockguard_api::openapi_pretty_json());
            return ExitCode::SUCCESS;
        }
        Command::Bench => {
            println!(
                "Benchmarks live in the harness crate (benches/). Run `just bench` from the \
                 repository root; see README.md for workloads and options."
            );
            return ExitCode::SUCCESS;
        }
        Command::Serve {
            database,
            serve,
            insecure,
        } => (
            CliSettings {
                database,
                serve: *serve,
                json_logs: cli.json_logs,
            },
            Action::Serve { insecure },
        ),
        Command::Migrate { database } => (database_only(database), Action::Migrate),
        Command::Probe { database } => (database_only(database), Action::Probe),
        Command::Audit { database, full } => (database_only(database), Action::Audit { full }),
        Command::Holds {
            command: HoldsCommand::Sweep { database, batch },
        } => (database_only(database), Action::SweepHolds { batch }),
    };
    let settings = match Settings::resolve(&given) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("stockguard: invalid configuration: {error:#}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("stockguard: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Spans are exported by `serve` only; the other commands are over before a batch would go.
    let otlp = match action {
        Action::Serve { .. } => settings.otlp.as_ref(),
        Action::Migrate | Action::Probe | Action::Audit { .. } | Action::SweepHolds { .. } => None,
    };
    let telemetry = {
        // The span exporter is a task on this runtime.
        let _inside_runtime = runtime.enter();
        match telemetry::init(settings.json_logs, otlp) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("stockguard: {}", stockguard_api::problem::error_chain(&error));
                return ExitCode::FAILURE;
            }
        }
    };
    let code = match runtime.block_on(run(action, settings)) {
        Ok(code) => code,
        Err(error) => {
            // Logged for log collectors and printed for the person at the terminal. Neither
            // carries the database URL: errors name the target by its parsed parts.
            tracing::error!("{error:#}");
            eprintln!("stockguard: {error:#}");
            ExitCode::FAILURE
        }
    };
    // Here, off the runtime's workers and with the server stopped, so the spans of the last
    // requests are closed and in the batch this flushes.
    telemetry.shutdown();
    code
}

async fn run(action: Action, settings: Settings) -> anyhow::Result<ExitCode> {
    match action {
        Action::Serve { insecure } => serve(settings, insecure).await,
        Action::Migrate => {
            let store = open_store(&settings).await?;
            store.close().await;
            println!("migrations applied ({})", settings.database);
            Ok(ExitCode::SUCCESS)
        }
        Action::Probe => {
            let store = open_store(&settings).await?;
            let report = store.probe_report().context("the store was probed on opening")?;
            store.close().await;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(ExitCode::SUCCESS)
        }
        Action::Audit { full: true } => audit_command::full(settings).await,
        Action::Audit { full: false } => audit_command::incremental(settings).await,
        Action::SweepHolds { batch } => sweep_holds(settings, batch).await,
    }
}

/// Most batches `holds sweep` runs: a bound on the loop, far above any real backlog
/// (1,000 holds per batch).
const SWEEP_BATCHES_MAX: u32 = 100_000;

async fn sweep_holds(settings: Settings, batch: u32) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&settings).await?;
    let mut total = 0_usize;
    let mut outcome = Ok(());
    for _ in 0..SWEEP_BATCHES_MAX {
        match store.sweep_holds(batch).await {
            Ok(expired) => {
                total += expired;
                if expired < batch as usize {
                    break;
                }
            }
            Err(error) => {
                outcome = Err(anyhow::anyhow!(
                    "sweeping holds in {}: {}",
                    settings.database,
                    stockguard_api::problem::error_chain(&error)
                ));
                break;
            }
        }
    }
    store.close().await;
    println!("holds sweep: {total} expired hold(s) resolved");
    outcome.map(|()| ExitCode::SUCCESS)
}

async fn serve(settings: Settings, insecure: bool) -> anyhow::Result<ExitCode> {
    if !settings.bind.ip().is_loopback() && settings.auth_token.is_none() {
        if insecure {
            tracing::warn!(bind = %settings.bind, "serving a non-loopback address WITHOUT an auth token (--insecure)");
        } else {
            anyhow::bail!(
                "refusing to bind the non-loopback address {} without an auth token: set \
                 STOCKGUARD_AUTH_TOKEN (or --auth-token / auth_token in the config file), or pass --insecure",
                settings.bind
            );
        }
    }
    let store = open_store(&settings).await?;
    if let Some(refusal) = server::default_strategy_refusal(
        settings.default_strategy,
        store.backend(),
        &store.capabilities(),
        store.probe_report().as_ref(),
    ) {
        store.close().await;
        anyhow::bail!(refusal);
    }
    let running = server::start(&settings, Arc::new(store))
        .await
        .with_context(|| format!("binding {}", settings.bind))?;
    tracing::info!(
        addr = %running.addr(),
        default_strategy = %settings.default_strategy,
        strategy_override = settings.allow_strategy_override,
        auth = settings.auth_token.is_some(),
        audit_token = settings.audit_token.is_some(),
        "serving; API docs at http://{}/docs", running.addr()
    );
    let trigger = running.shutdown_handle();
    tokio::spawn(async move {
        server::shutdown_signal().await;
        let _ = trigger.send(true);
    });
    running.wait().await.context("serving")?;
    Ok(ExitCode::SUCCESS)
}
