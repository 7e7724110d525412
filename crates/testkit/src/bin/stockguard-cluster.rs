//! `stockguard-cluster galera [--nodes N] [--ready-file PATH]`: starts a private MariaDB
//! Galera cluster on loopback (see `PrivateGalera`), prints each node as `127.0.0.1:PORT`,
//! writes the same lines to the ready file, and keeps the cluster up until SIGTERM or Ctrl-C,
//! then stops every node and deletes its data. `just galera-up` / `galera-down` run it.

use std::path::PathBuf;
use std::process::ExitCode;

use stockguard_testkit::PrivateGalera;

const USAGE: &str = "usage: stockguard-cluster galera [--nodes N] [--ready-file PATH]";

struct Args {
    nodes: usize,
    ready_file: Option<PathBuf>,
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    if args.next().as_deref() != Some("galera") {
        return Err(USAGE.to_owned());
    }
    let mut parsed = Args {
        nodes: 3,
        ready_file: None,
    };
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--nodes" => {
                parsed.nodes = value
                    .parse()
                    .map_err(|e| format!("--nodes {value}: {e}\n{USAGE}"))?;
            }
            "--ready-file" => parsed.ready_file = Some(PathBuf::from(value)),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    Ok(parsed)
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
    let cluster = match PrivateGalera::start(args.nodes).await {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("stockguard-cluster: {error}");
            return ExitCode::FAILURE;
        }
    };
    let lines: String = cluster
        .nodes()
        .iter()
        .map(|node| format!("127.0.0.1:{}\n", node.port()))
        .collect();
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
    drop(cluster);
    if let Some(path) = &args.ready_file {
        let _ = std::fs::remove_file(path);
    }
    ExitCode::SUCCESS
}
