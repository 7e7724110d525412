//! A private Redis primary with one replica and three sentinels, each on its own free loopback
//! port, for failover tests: kill the primary and the sentinels promote the replica. Nothing is
//! kept on disk but the sentinels' rewritten config files, in a temp directory.

use std::process::{Child, Command};
use std::time::Duration;

use super::process::{io_error, spawn_logged, wait_exit};
use super::redis::{PrivateRedis, cli, installed, wait_for};
use super::{SERVER_WAIT, ServerError, free_port};

/// The name the sentinels monitor the primary under.
pub const SENTINEL_SERVICE: &str = "stockguard";

/// How long a primary may not answer before a sentinel thinks it down. Short, so a failover
/// test fails over in a few seconds.
const DOWN_AFTER_MS: u64 = 1_000;

/// A primary, its replica and three sentinels (quorum 2).
#[derive(Debug)]
pub struct PrivateRedisSentinel {
    primary: PrivateRedis,
    replica: PrivateRedis,
    sentinels: Vec<(u16, Child)>,
    // Declared last: the processes stop before their directory is removed.
    dir: tempfile::TempDir,
}

impl PrivateRedisSentinel {
    /// Starts the primary, the replica (waits until it is in sync) and three sentinels (waits
    /// until each knows the replica and the other sentinels).
    pub fn start() -> Result<Self, ServerError> {
        installed()?;
        let dir = tempfile::Builder::new()
            .prefix("stockguard-redis-sentinel-")
            .tempdir()
            .map_err(|source| io_error("creating a temp dir".into(), source, ""))?;
        let primary = PrivateRedis::start_single(dir.path())?;
        let replica = PrivateRedis::start_replica(dir.path(), primary.port())?;
        let log = dir.path().join("sentinels.log");
        let replica_port = replica.port();
        wait_for("waiting for the replica to sync", &log, || {
            cli(replica_port, &["INFO", "replication"])
                .is_some_and(|info| info.contains("master_link_status:up"))
        })?;
        let mut topology = Self {
            primary,
            replica,
            sentinels: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port().map_err(|source| io_error("finding a free port".into(), source, ""))?;
            let conf = topology.dir.path().join(format!("sentinel-{port}.conf"));
            let text = format!(
                "port {port}\nbind 127.0.0.1\nsentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_SERVICE} {DOWN_AFTER_MS}\n\
                 sentinel failover-timeout {SENTINEL_SERVICE} 10000\n\
                 sentinel parallel-syncs {SENTINEL_SERVICE} 1\n",
                topology.primary.port()
            );
            std::fs::write(&conf, text)
                .map_err(|source| io_error(format!("writing {}", conf.display()), source, ""))?;
            let mut command = Command::new("redis-server");
            command.arg(&conf).arg("--sentinel");
            let child = spawn_logged("starting a sentinel", &mut command, &log)?;
            topology.sentinels.push((port, child));
        }
        for (port, _) in &topology.sentinels {
            let port = *port;
            wait_for(
                "waiting for the sentinels to see each other and the replica",
                &log,
                || {
                    cli(port, &["SENTINEL", "MASTER", SENTINEL_SERVICE]).is_some_and(|info| {
                        let field = |name: &str| {
                            let lines: Vec<&str> = info.lines().collect();
                            lines
                                .iter()
                                .position(|line| *line == name)
                                .and_then(|at| lines.get(at + 1))
                                .and_then(|value| value.parse::<u32>().ok())
                        };
                        field("num-slaves") == Some(1) && field("num-other-sentinels") == Some(2)
                    })
                },
            )?;
        }
        Ok(topology)
    }

    /// `redis+sentinel://127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3/stockguard`, the gate's
    /// sentinel URL.
    pub fn url(&self) -> String {
        let sentinels: Vec<String> = self
            .sentinels
            .iter()
            .map(|(port, _)| format!("127.0.0.1:{port}"))
            .collect();
        format!("redis+sentinel://{}/{SENTINEL_SERVICE}", sentinels.join(","))
    }

    /// The port the sentinels name as primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let (port, _) = self.sentinels.first()?;
        let answer = cli(*port, &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_SERVICE])?;
        answer.lines().nth(1)?.trim().parse().ok()
    }

    /// SIGKILLs the primary (its unreplicated writes are lost) and waits until the sentinels
    /// have promoted the replica and it accepts writes. Returns how long that took.
    pub fn kill_primary_and_wait_for_failover(&mut self) -> Result<Duration, ServerError> {
        let started = std::time::Instant::now();
        let old = self.primary.port();
        self.primary.kill();
        let log = self.dir.path().join("sentinels.log");
        let replica = self.replica.port();
        wait_for("waiting for the sentinels to promote the replica", &log, || {
            self.primary_port() == Some(replica)
                && cli(replica, &["ROLE"]).is_some_and(|role| role.starts_with("master"))
        })?;
        debug_assert_ne!(old, replica);
        Ok(started.elapsed())
    }
}

impl Drop for PrivateRedisSentinel {
    fn drop(&mut self) {
        for (_, child) in &mut self.sentinels {
            let _ = child.kill();
            let _ = wait_exit(child, SERVER_WAIT);
        }
    }
}
