//! A private MariaDB Galera cluster: [`PrivateMariaDb`] nodes of our own on loopback, joined
//! by Galera 4 (Debian's `galera-4`), for tests and `just galera-up`.
//!
//! The first node bootstraps the cluster (`--wsrep-new-cluster`, on its first start only);
//! each later node joins it and receives a full copy by rsync SST. Nodes run as the `mysql`
//! user when we are root: rsync SST fails as root. Every node listens on free loopback ports
//! of its own (client, group communication, IST, SST).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use sqlx::Connection;

use super::{MariaDbOptions, PrivateMariaDb, SERVER_WAIT, ServerError, free_port, started_or_skip};

/// Path of `libgalera_smm.so`, when it is not where Debian's `galera-4` puts it.
pub const GALERA_PROVIDER_ENV: &str = "STOCKGUARD_GALERA_PROVIDER";

/// Where Galera 4's provider library is installed, by distribution.
const PROVIDER_PATHS: &[&str] = &[
    "/usr/lib/galera/libgalera_smm.so",
    "/usr/lib64/galera-4/libgalera_smm.so",
    "/usr/lib/libgalera_smm.so",
];

/// Most nodes a private cluster may have: each is a full server on this machine.
pub const GALERA_NODES_MAX: usize = 5;

/// The bootstrap flag, dropped from the first node once the cluster exists: a restarted node
/// must rejoin, not found a second cluster.
const NEW_CLUSTER: &str = "--wsrep-new-cluster";

/// A Galera cluster of private MariaDB nodes. Dropping it kills every node and deletes their
/// directories.
#[derive(Debug)]
pub struct PrivateGalera {
    nodes: Vec<PrivateMariaDb>,
}

/// One node's Galera ports.
#[derive(Debug, Clone, Copy)]
struct NodePorts {
    group: u16,
    ist: u16,
    sst: u16,
}

impl PrivateGalera {
    /// Starts `size` nodes (1..=[`GALERA_NODES_MAX`]), one after the other, and waits until
    /// every one is synced in a primary component of `size` nodes.
    pub async fn start(size: usize) -> Result<Self, ServerError> {
        if !(1..=GALERA_NODES_MAX).contains(&size) {
            return Err(ServerError::Failed {
                step: "starting a Galera cluster".into(),
                detail: format!("{size} nodes asked for; 1 to {GALERA_NODES_MAX} are allowed"),
                log_tail: String::new(),
            });
        }
        let provider = provider()?;
        let ports = (0..size)
            .map(|_| {
                Ok(NodePorts {
                    group: free_port()?,
                    ist: free_port()?,
                    sst: free_port()?,
                })
            })
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|source| ServerError::Io {
                step: "finding free ports for Galera".into(),
                source,
                log_tail: String::new(),
            })?;
        let members = ports
            .iter()
            .map(|p| format!("127.0.0.1:{}", p.group))
            .collect::<Vec<_>>()
            .join(",");
        let mut nodes: Vec<PrivateMariaDb> = Vec::with_capacity(size);
        for (index, node_ports) in ports.iter().enumerate() {
            let mut options = node_options(&provider, &members, *node_ports);
            if index == 0 {
                options = options.arg(NEW_CLUSTER);
            }
            let node = PrivateMariaDb::start(options).await?;
            wait_synced(&node, index + 1).await?;
            nodes.push(node);
        }
        if let Some(first) = nodes.first_mut() {
            first.remove_arg(NEW_CLUSTER);
        }
        Ok(Self { nodes })
    }

    /// [`PrivateGalera::start`], or `None` after a loud message when MariaDB or Galera is
    /// not installed and no database is required; panics (with the log tail) otherwise.
    pub async fn start_or_skip(size: usize) -> Option<Self> {
        started_or_skip("Galera cluster", Self::start(size).await)
    }

    /// Each node's `mysql://root@127.0.0.1:<port>/mysql`, in start order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(PrivateMariaDb::url).collect()
    }

    /// The nodes, in start order.
    pub fn nodes(&self) -> &[PrivateMariaDb] {
        &self.nodes
    }

    /// One node, to kill, stop or restart it. A restarted node rejoins the cluster (by IST
    /// when the others still hold the writes it missed, else by SST).
    pub fn node_mut(&mut self, index: usize) -> Option<&mut PrivateMariaDb> {
        self.nodes.get_mut(index)
    }

    /// Waits until `node` is synced with a primary component of `size` nodes.
    pub async fn wait_synced(&self, node: usize, size: usize) -> Result<(), ServerError> {
        match self.nodes.get(node) {
            Some(server) => wait_synced(server, size).await,
            None => Err(ServerError::Failed {
                step: "waiting for a Galera node".into(),
                detail: format!("no node {node} in a cluster of {}", self.nodes.len()),
                log_tail: String::new(),
            }),
        }
    }
}

fn node_options(provider: &std::path::Path, members: &str, ports: NodePorts) -> MariaDbOptions {
    MariaDbOptions::new()
        .arg("--wsrep-on=ON")
        .arg(format!("--wsrep-provider={}", provider.display()))
        .arg("--wsrep-cluster-name=stockguard")
        .arg(format!("--wsrep-cluster-address=gcomm://{members}"))
        .arg(format!("--wsrep-node-address=127.0.0.1:{}", ports.group))
        .arg(format!(
            "--wsrep-provider-options=gmcast.listen_addr=tcp://127.0.0.1:{};ist.recv_addr=127.0.0.1:{};gcache.size=32M",
            ports.group, ports.ist
        ))
        .arg(format!("--wsrep-sst-receive-address=127.0.0.1:{}", ports.sst))
        .arg("--wsrep-sst-method=rsync")
        // What Galera requires: row-based replication, and interleaved auto-increment locks.
        .arg("--binlog-format=ROW")
        .arg("--innodb-autoinc-lock-mode=2")
}

/// Polls the node until it reports `Synced` in a primary component of `size` nodes.
async fn wait_synced(node: &PrivateMariaDb, size: usize) -> Result<(), ServerError> {
    let started = Instant::now();
    let mut last = String::from("no answer yet");
    while started.elapsed() < SERVER_WAIT {
        match status(&node.url()).await {
            Ok((state, cluster_size)) if state == "Synced" && cluster_size == size => return Ok(()),
            Ok((state, cluster_size)) => last = format!("{state} in a component of {cluster_size}"),
            Err(error) => last = error.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(ServerError::Timeout {
        step: format!(
            "waiting for Galera node on port {} to sync with {size} nodes (last: {last})",
            node.port()
        ),
        waited: SERVER_WAIT,
        log_tail: node.log_tail(),
    })
}

async fn status(url: &str) -> Result<(String, usize), sqlx::Error> {
    let mut connection = sqlx::MySqlConnection::connect(url).await?;
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_local_state_comment', 'wsrep_cluster_size')",
    )
    .fetch_all(&mut connection)
    .await?;
    let _ = connection.close().await;
    let value = |name: &str| {
        rows.iter()
            .find(|(variable, _)| variable == name)
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    Ok((
        value("wsrep_local_state_comment"),
        value("wsrep_cluster_size").parse().unwrap_or(0),
    ))
}

fn provider() -> Result<PathBuf, ServerError> {
    if let Ok(path) = std::env::var(GALERA_PROVIDER_ENV) {
        return Ok(PathBuf::from(path));
    }
    PROVIDER_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|path| path.is_file())
        .ok_or_else(|| {
            ServerError::NotInstalled(format!(
                "no Galera provider in {}; install galera-4 or set {GALERA_PROVIDER_ENV}",
                PROVIDER_PATHS.join(", ")
            ))
        })
}
