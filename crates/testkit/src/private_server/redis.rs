//! Private Redis servers: one node, or a Redis Cluster of several masters, each on its own
//! free loopback port, keeping nothing on disk but the cluster's node files in a temp
//! directory. Tests that kill Redis, or need a cluster, start their own; the machine's shared
//! Redis at 127.0.0.1:6379 stays up.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use super::process::{spawn_logged, wait_exit};
use super::{SERVER_WAIT, ServerError, free_port, log_tail};

/// One `redis-server` process.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    cluster: bool,
    /// A replica's primary port.
    replica_of: Option<u16>,
}

/// Where the programs are: `redis-server` and `redis-cli` from PATH.
pub(super) fn installed() -> Result<(), ServerError> {
    for program in ["redis-server", "redis-cli"] {
        let found = Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        if !found {
            return Err(ServerError::NotInstalled(format!(
                "{program} not found (Debian: apt-get install redis-server)"
            )));
        }
    }
    Ok(())
}

/// A free port whose cluster bus port (port + 10000) is free too.
fn free_cluster_port() -> Result<u16, ServerError> {
    for _ in 0..50 {
        let port = free_port()
            .map_err(|source| super::process::io_error("finding a free port".into(), source, ""))?;
        if port < 55_000 && std::net::TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok() {
            return Ok(port);
        }
    }
    Err(ServerError::Failed {
        step: "finding a free port pair".into(),
        detail: "no port with a free bus port in 50 tries".into(),
        log_tail: String::new(),
    })
}

pub(super) fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Polls `ready` every 20 ms for up to [`SERVER_WAIT`].
pub(super) fn wait_for(step: &str, log: &Path, mut ready: impl FnMut() -> bool) -> Result<(), ServerError> {
    let started = Instant::now();
    while started.elapsed() < SERVER_WAIT {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(ServerError::Timeout {
        step: step.to_owned(),
        waited: SERVER_WAIT,
        log_tail: log_tail(log),
    })
}

impl PrivateRedis {
    /// Starts a node in `dir` (a cluster node, or a replica of `replica_of`) and waits until
    /// it answers PING.
    fn spawn(dir: &Path, cluster: bool, replica_of: Option<u16>) -> Result<Self, ServerError> {
        installed()?;
        let port = if cluster {
            free_cluster_port()?
        } else {
            free_port()
                .map_err(|source| super::process::io_error("finding a free port".into(), source, ""))?
        };
        let node_dir = dir.join(port.to_string());
        std::fs::create_dir_all(&node_dir).map_err(|source| {
            super::process::io_error(format!("creating {}", node_dir.display()), source, "")
        })?;
        let log = node_dir.join("redis.log");
        let mut server = Self {
            port,
            dir: node_dir,
            log,
            child: None,
            cluster,
            replica_of,
        };
        server.start()?;
        Ok(server)
    }

    /// Starts one standalone node.
    pub fn start_single(dir: &Path) -> Result<Self, ServerError> {
        Self::spawn(dir, false, None)
    }

    /// Starts a standalone node that replicates the node on `primary_port`.
    pub fn start_replica(dir: &Path, primary_port: u16) -> Result<Self, ServerError> {
        Self::spawn(dir, false, Some(primary_port))
    }

    /// Starts (again) the process on the same port and directory.
    pub fn start(&mut self) -> Result<(), ServerError> {
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir);
        if self.cluster {
            command.args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]);
            command.args(["--cluster-node-timeout", "2000"]);
        }
        if let Some(primary) = self.replica_of {
            command.args(["--replicaof", "127.0.0.1", &primary.to_string()]);
        }
        self.child = Some(spawn_logged("starting redis-server", &mut command, &self.log)?);
        let port = self.port;
        wait_for("waiting for redis-server", &self.log, || {
            cli(port, &["PING"]).as_deref() == Some("PONG")
        })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SIGKILL: the node is gone at once, with whatever it held in memory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_exit(&mut child, SERVER_WAIT);
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Redis Cluster of masters only (no replicas), every slot assigned.
#[derive(Debug)]
pub struct PrivateRedisCluster {
    nodes: Vec<PrivateRedis>,
    // Declared last: the nodes stop before their directory is removed.
    _dir: tempfile::TempDir,
}

impl PrivateRedisCluster {
    /// Starts `masters` nodes (at least 3), joins them with `redis-cli --cluster create` and
    /// waits until every node reports `cluster_state:ok`.
    pub fn start(masters: usize) -> Result<Self, ServerError> {
        installed()?;
        let dir = tempfile::Builder::new()
            .prefix("stockguard-redis-cluster-")
            .tempdir()
            .map_err(|source| super::process::io_error("creating a temp dir".into(), source, ""))?;
        let nodes = (0..masters.max(3))
            .map(|_| PrivateRedis::spawn(dir.path(), true, None))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let log = dir.path().join("create.log");
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create").args(&addresses).args([
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]);
        super::process::run_tool("redis-cli --cluster create", &mut create, &log)?;
        for node in &nodes {
            let port = node.port;
            wait_for("waiting for cluster_state:ok", &log, || {
                cli(port, &["CLUSTER", "INFO"]).is_some_and(|info| info.contains("cluster_state:ok"))
            })?;
        }
        Ok(Self { nodes, _dir: dir })
    }

    /// `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,...`, the gate's cluster URL.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    /// Each node's `redis://` URL.
    pub fn node_urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateRedis::url).collect()
    }
}

/// A private standalone node in its own temp directory.
#[derive(Debug)]
pub struct PrivateRedisNode {
    /// The node.
    pub node: PrivateRedis,
    _dir: tempfile::TempDir,
}

impl PrivateRedisNode {
    /// Starts one.
    pub fn start() -> Result<Self, ServerError> {
        let dir = tempfile::Builder::new()
            .prefix("stockguard-redis-")
            .tempdir()
            .map_err(|source| super::process::io_error("creating a temp dir".into(), source, ""))?;
        let node = PrivateRedis::start_single(dir.path())?;
        Ok(Self { node, _dir: dir })
    }

    /// [`PrivateRedisNode::start`] off the caller's runtime, or `None` after a loud message
    /// when Redis is not installed and no database is required; panics on other failures.
    pub async fn start_or_skip() -> Option<Self> {
        super::started_or_skip("Redis", super::off_runtime(Self::start).await)
    }
}
