//! A private PostgreSQL primary with a synchronous standby under Patroni (with etcd), behind
//! haproxy, as `.ci/pg-ha` starts it (`just pg-ha-up` runs the same script): the database of
//! the chaos runner's `pgha:` cells and of the bench's PostgreSQL HA section. Clients reach
//! the primary through haproxy, wherever it is.
//!
//! In a `pgha:` cell, `db_crash` stalls the primary's WAL senders for [`STANDBY_STALL_MS`] (the standby falls
//! behind, as behind a slow link) and then SIGKILLs the primary's Patroni and every process of
//! its PostgreSQL (a machine's death); `db_restart` stops them cleanly; either way the standby is promoted, the old
//! primary is started again and rejoins as the synchronous standby, and the fault ends only
//! once a primary with a streaming synchronous standby answers through haproxy. With
//! `synchronous_mode_strict`, no commit is acknowledged in between: the new primary has no
//! standby until the old one rejoins, and waits.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use stockguard_testkit::postgres_started_at;

/// How long a failover and the rejoin after it may take (Patroni's leader key expires after
/// its TTL, 20 s at the least, when the primary dies without releasing it).
const FAILOVER_WAIT: Duration = Duration::from_secs(90);
/// How long the standby is kept from the primary's WAL before a crash: with asynchronous
/// replication (`PGHA_REPLICATION=async`, the negative control) the primary acknowledges
/// commits the standby never receives, and the promotion loses them.
pub const STANDBY_STALL_MS: &str = "1000";
/// Seconds `wait-sync` may wait, after start and after a rejoin.
const SYNC_WAIT_S: &str = "90";

/// The running cluster; dropping it runs `.ci/pg-ha down`.
#[derive(Debug)]
pub struct PgHa {
    dir: PathBuf,
    /// The primary through haproxy: `postgres://postgres:postgres@127.0.0.1:PORT/postgres`.
    pub url: String,
    /// haproxy's port.
    pub port: u16,
}

impl PgHa {
    /// `.ci/pg-ha up` in a directory of its own (it installs Patroni, etcd and haproxy first
    /// when they are missing).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(format!("stockguard-pgha-{}", uuid::Uuid::new_v4().simple()));
        let output = script(&dir, &["up"]).await?;
        let url = output.lines().last().unwrap_or_default().trim().to_owned();
        let port = url
            .rsplit_once(':')
            .and_then(|(_, rest)| rest.split('/').next())
            .and_then(|port| port.parse().ok())
            .with_context(|| format!(".ci/pg-ha up printed no URL: {output}"))?;
        Ok(Self { dir, url, port })
    }

    /// The primary's member name.
    async fn leader(&self) -> Option<String> {
        script(&self.dir, &["leader"])
            .await
            .ok()
            .map(|name| name.trim().to_owned())
    }

    /// The primary's postmaster pid, from its lock file (a new one after every failover).
    pub fn primary_pid(&self) -> Option<u32> {
        let output = script_blocking(&self.dir, "leader").output().ok()?;
        let member = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let lock = std::fs::read_to_string(self.dir.join(member).join("postmaster.pid")).ok()?;
        lock.lines().next()?.trim().parse().ok()
    }

    /// When the primary's postmaster started, as it reports it.
    pub async fn started_at(&self) -> anyhow::Result<SystemTime> {
        Ok(postgres_started_at(&self.url).await?)
    }

    /// Kills (`crash`) or stops the primary, waits until the standby has taken over, starts
    /// the old primary again and waits until it streams as the synchronous standby.
    pub async fn fail_over(&mut self, crash: bool) -> anyhow::Result<()> {
        let (signal, stall_ms) = if crash {
            ("-9", STANDBY_STALL_MS)
        } else {
            ("-15", "0")
        };
        let old = script(&self.dir, &["kill-primary", signal, stall_ms])
            .await?
            .trim()
            .to_owned();
        let started = Instant::now();
        loop {
            match self.leader().await {
                Some(new) if !new.is_empty() && new != old => break,
                _ if started.elapsed() > FAILOVER_WAIT => {
                    bail!("no member took over from {old} within {FAILOVER_WAIT:?}")
                }
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
        script(&self.dir, &["restart-member", &old]).await?;
        script(&self.dir, &["wait-sync", SYNC_WAIT_S]).await?;
        Ok(())
    }

    /// The primary's URL straight to its port, past haproxy (to the `postgres` database).
    pub async fn primary_direct_url(&self) -> anyhow::Result<String> {
        Ok(script(&self.dir, &["primary-url"]).await?.trim().to_owned())
    }

    /// Switches the running cluster to synchronous replication in strict mode (`sync`), or to
    /// Patroni's default asynchronous replication, and waits until it is in effect.
    pub async fn set_replication(&self, sync: bool) -> anyhow::Result<()> {
        let mode = if sync { "sync" } else { "async" };
        script(&self.dir, &["replication", mode]).await.map(drop)
    }

    /// The members' logs, last lines, for a failure message.
    pub fn log_tail(&self) -> String {
        ["pg0", "pg1"]
            .iter()
            .map(|member| {
                let log = std::fs::read_to_string(self.dir.join(format!("{member}.log"))).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(20).collect();
                format!(
                    "--- {member}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect()
    }
}

impl Drop for PgHa {
    fn drop(&mut self) {
        let stopped = script_blocking(&self.dir, "down").status();
        if !matches!(stopped, Ok(status) if status.success()) {
            eprintln!("warning: .ci/pg-ha down failed for {}", self.dir.display());
        }
    }
}

/// `.ci/pg-ha COMMAND` for the cluster in `dir`, run on the calling thread (for `Drop` and
/// the synchronous pid lookup).
fn script_blocking(dir: &std::path::Path, command: &str) -> Command {
    let mut script = Command::new("bash");
    script.arg(script_path()).arg(command).env("PGHA_DIR", dir);
    script
}

fn script_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.ci/pg-ha")
}

/// Runs `.ci/pg-ha ARGS` for the cluster in `dir`, off the runtime; its stdout.
async fn script(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new("bash");
    command.arg(script_path()).args(args).env("PGHA_DIR", dir);
    let output = command
        .output()
        .await
        .with_context(|| format!("running .ci/pg-ha {}", args.join(" ")))?;
    if !output.status.success() {
        bail!(
            ".ci/pg-ha {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
