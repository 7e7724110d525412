//! The reference binaries (pgbench, sysbench, redis-benchmark): finding them, running one
//! bounded invocation, and reading their output. Nothing here reimplements them.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::process::Command;

/// How long a tool may run past its own measured duration (connecting 256 clients, loading
/// the script) before the harness kills it.
pub(super) const TOOL_GRACE: Duration = Duration::from_secs(60);

/// The tool's version line, or why it cannot run here.
pub(super) async fn version(tool: &str) -> Result<String, String> {
    let output = Command::new(tool)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .await
        .map_err(|error| format!("`{tool}` is not installed ({error}); {}", install_hint(tool)))?;
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text.lines().next().unwrap_or_default().trim();
    if !output.status.success() || line.is_empty() {
        return Err(format!("`{tool} --version` failed; {}", install_hint(tool)));
    }
    Ok(line.to_owned())
}

fn install_hint(tool: &str) -> &'static str {
    match tool {
        "pgbench" => "it comes with PostgreSQL (Debian: postgresql-client or postgresql)",
        "sysbench" => "install it with `apt-get install sysbench`",
        _ => "it comes with redis-server (Debian: redis-tools)",
    }
}

/// Runs `command` to completion within `limit`, returning its stdout; a non-zero exit, a
/// timeout or a spawn failure is an error carrying stderr's tail.
pub(super) async fn run_bounded(mut command: Command, limit: Duration, what: &str) -> anyhow::Result<String> {
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().with_context(|| format!("starting {what}"))?;
    let output = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .with_context(|| format!("{what} ran past {} s and was killed", limit.as_secs()))?
        .with_context(|| format!("waiting for {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().chain(stdout.lines()).rev().take(6).collect();
        bail!("{what} exited with {}: {}", output.status, tail.join(" | "));
    }
    Ok(stdout)
}

/// pgbench's `tps = X (without initial connection time)`.
pub(super) fn pgbench_tps(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .context("pgbench printed no `tps = ` line")
}

/// sysbench's `transactions: N (X per sec.)`; every `event()` call is one transaction.
pub(super) fn sysbench_tps(output: &str) -> anyhow::Result<f64> {
    output
        .lines()
        .map(str::trim)
        .find_map(|line| line.strip_prefix("transactions:"))
        .and_then(|rest| rest.split('(').nth(1))
        .and_then(|rate| rate.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .context("sysbench printed no `transactions:` line")
}

/// redis-benchmark's `--csv` row: the requests per second of its one test.
pub(super) fn redis_benchmark_rps(output: &str) -> anyhow::Result<f64> {
    let row = output
        .lines()
        .rev()
        .find(|line| line.starts_with('"') && !line.starts_with("\"test\""))
        .context("redis-benchmark printed no result row")?;
    row.split("\",\"")
        .nth(1)
        .and_then(|rps| rps.trim_matches('"').parse().ok())
        .with_context(|| format!("no rps in redis-benchmark's row {row}"))
}

/// The parts of a `scheme://user[:password]@host[:port]/database` URL the tools take as
/// flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// User name, if any.
    pub user: Option<String>,
    /// Password, if any.
    pub password: Option<String>,
    /// Host name or address.
    pub host: String,
    /// Port, if given.
    pub port: Option<u16>,
    /// Database (or Redis db number), if given.
    pub database: Option<String>,
}

impl Endpoint {
    /// Parses `url`; a query string is ignored, percent-encoding is not supported.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let rest = url
            .split_once("://")
            .map(|(_, rest)| rest)
            .with_context(|| format!("`{url}` is not a URL"))?;
        let rest = rest.split('?').next().unwrap_or_default();
        let (authority, database) = match rest.split_once('/') {
            Some((authority, database)) => (authority, Some(database).filter(|d| !d.is_empty())),
            None => (rest, None),
        };
        let (credentials, host_port) = match authority.rsplit_once('@') {
            Some((credentials, host_port)) => (Some(credentials), host_port),
            None => (None, authority),
        };
        let (user, password) = match credentials.map(|c| c.split_once(':').unwrap_or((c, ""))) {
            Some((user, password)) => (
                Some(user.to_owned()).filter(|u| !u.is_empty()),
                Some(password.to_owned()).filter(|p| !p.is_empty()),
            ),
            None => (None, None),
        };
        if url.contains('%') {
            bail!("percent-encoded URLs are not supported by the anchors: {url}");
        }
        let (host, port) = match host_port.rsplit_once(':') {
            Some((host, port)) => (
                host,
                Some(port.parse().with_context(|| format!("the port in `{url}`"))?),
            ),
            None => (host_port, None),
        };
        if host.is_empty() {
            bail!("no host in `{url}`");
        }
        Ok(Self {
            user,
            password,
            host: host.to_owned(),
            port,
            database: database.map(str::to_owned),
        })
    }
}

/// Writes `text` to `dir/name` for a tool to read.
pub(super) fn write_script(dir: &Path, name: &str, text: &str) -> anyhow::Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_the_urls_the_harness_hands_out() {
        let mysql = Endpoint::parse("mysql://root@127.0.0.1:3306/sg_bench_x").unwrap();
        assert_eq!(mysql.user.as_deref(), Some("root"));
        assert_eq!((mysql.host.as_str(), mysql.port), ("127.0.0.1", Some(3306)));
        assert_eq!(mysql.database.as_deref(), Some("sg_bench_x"));
        assert_eq!(mysql.password, None);
        let secret = Endpoint::parse("mysql://app:pw@db:3307/shop?ssl-mode=disabled").unwrap();
        assert_eq!(
            (secret.password.as_deref(), secret.database.as_deref()),
            (Some("pw"), Some("shop"))
        );
        let redis = Endpoint::parse("redis://127.0.0.1:6379").unwrap();
        assert_eq!((redis.port, redis.database, redis.user), (Some(6379), None, None));
        assert!(Endpoint::parse("127.0.0.1:6379").is_err());
        assert!(Endpoint::parse("mysql://u:p%40@h/d").is_err());
        assert!(Endpoint::parse("mysql://h:notaport/d").is_err());
    }

    #[test]
    fn the_tools_own_output_is_read() {
        let pgbench = "number of failed transactions: 0 (0.000%)\nlatency average = 2.1 ms\n\
                       initial connection time = 20.1 ms\ntps = 3012.441 (without initial connection time)\n";
        assert_eq!(pgbench_tps(pgbench).unwrap(), 3012.441);
        let sysbench = "SQL statistics:\n    queries performed:\n        read: 10\n    transactions:                        \
                        5346   (1781.57 per sec.)\n    queries: 21384 (7126.30 per sec.)\n";
        assert_eq!(sysbench_tps(sysbench).unwrap(), 1781.57);
        let redis = "\"test\",\"rps\",\"avg_latency_ms\"\n\"EVALSHA fa62 1 k\",\"30048.08\",\"1.2\"\n";
        assert_eq!(redis_benchmark_rps(redis).unwrap(), 30048.08);
        assert!(pgbench_tps("connection refused").is_err());
        assert!(sysbench_tps("FATAL").is_err());
        assert!(redis_benchmark_rps("\"test\",\"rps\"\n").is_err());
    }
}
