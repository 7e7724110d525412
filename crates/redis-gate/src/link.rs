//! The connection to Redis: one node (one multiplexed connection, reopened after a failure), a
//! primary found through sentinels (the same, asking the sentinels for the primary at each
//! reopening, so a failover is followed), or a Redis Cluster (through the cluster client,
//! which follows slot moves). Every call is bounded by the gate's `redis_timeout`, so a Redis
//! that stops answering costs a request at most that long before the Redis-down policy
//! applies.

use std::time::Duration;

use std::sync::{Arc, Mutex};

use redis::aio::MultiplexedConnection;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::Sentinel;
use redis::{AsyncConnectionConfig, FromRedisValue, RedisError, ScriptInvocation};

/// Where the gate's Redis lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    /// One node (or a primary behind a stable address): `redis://127.0.0.1:6379`.
    Single(String),
    /// A Redis Cluster, by any of its nodes' URLs (the rest are discovered).
    Cluster(Vec<String>),
    /// The primary that sentinels (by their URLs) monitor under `service`.
    Sentinel {
        /// The sentinels' `redis://` URLs.
        sentinels: Vec<String>,
        /// The monitored primary's name.
        service: String,
    },
}

impl RedisTarget {
    /// Parses the service's `--redis-url`: one URL for a single node; `redis+cluster://` with
    /// comma-separated `host:port` seeds for a cluster; `redis+sentinel://` with
    /// comma-separated sentinel `host:port`s, then `/` and the primary's name.
    pub fn parse(raw: &str) -> Result<Self, RedisError> {
        let invalid =
            |reason: &'static str| RedisError::from((redis::ErrorKind::InvalidClientConfig, reason));
        let nodes = |list: &str| -> Vec<String> {
            list.split(',')
                .filter(|node| !node.is_empty())
                .map(|node| format!("redis://{node}"))
                .collect()
        };
        if let Some(seeds) = raw.strip_prefix("redis+cluster://") {
            let nodes = nodes(seeds);
            if nodes.is_empty() {
                return Err(invalid("a redis+cluster:// URL names no node"));
            }
            return Ok(RedisTarget::Cluster(nodes));
        }
        if let Some(rest) = raw.strip_prefix("redis+sentinel://") {
            let (list, service) = rest
                .split_once('/')
                .ok_or_else(|| invalid("a redis+sentinel:// URL ends with /<primary name>"))?;
            let sentinels = nodes(list);
            if sentinels.is_empty() || service.is_empty() {
                return Err(invalid("a redis+sentinel:// URL names no sentinel or no primary"));
            }
            return Ok(RedisTarget::Sentinel {
                sentinels,
                service: service.to_owned(),
            });
        }
        Ok(RedisTarget::Single(raw.to_owned()))
    }
}

/// An open connection. A single node's multiplexed connection is dropped after an I/O
/// error or a timeout and opened again by the next call (bounded by the timeout), so a
/// restarted Redis is used again at once; the cluster client follows slots and nodes itself.
#[derive(Clone)]
pub(crate) enum Link {
    Single(Arc<SingleNode>),
    Cluster(ClusterConnection),
}

/// A single node: how to find it, how to connect, and the connection while it works.
pub(crate) struct SingleNode {
    source: NodeSource,
    config: AsyncConnectionConfig,
    connection: Mutex<Option<MultiplexedConnection>>,
}

/// Where a single node is.
enum NodeSource {
    /// At a fixed address.
    Fixed(redis::Client),
    /// Wherever the sentinels say the primary is now (asked at each reopening).
    Sentinel {
        sentinel: tokio::sync::Mutex<Sentinel>,
        service: String,
    },
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Link::Single(_) => "Link::Single",
            Link::Cluster(_) => "Link::Cluster",
        })
    }
}

/// Why a Redis call failed.
#[derive(Debug)]
pub(crate) enum LinkError {
    /// Redis answered with an error, or the connection failed.
    Redis(RedisError),
    /// No answer within the timeout.
    TimedOut,
}

impl std::fmt::Display for LinkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LinkError::Redis(error) => write!(f, "redis: {error}"),
            LinkError::TimedOut => f.write_str("redis did not answer in time"),
        }
    }
}

impl std::error::Error for LinkError {}

impl Link {
    /// Prepares the link; a cluster connects here (its client needs a node to learn the
    /// slots from), a single node at its first call. `timeout` bounds connecting and every
    /// call.
    pub(crate) async fn connect(target: &RedisTarget, timeout: Duration) -> Result<Self, LinkError> {
        let link = match target {
            RedisTarget::Single(url) => Link::Single(Arc::new(SingleNode::new(
                NodeSource::Fixed(redis::Client::open(url.as_str()).map_err(LinkError::Redis)?),
                timeout,
            ))),
            RedisTarget::Sentinel { sentinels, service } => Link::Single(Arc::new(SingleNode::new(
                NodeSource::Sentinel {
                    sentinel: tokio::sync::Mutex::new(
                        Sentinel::build(sentinels.iter().map(String::as_str).collect())
                            .map_err(LinkError::Redis)?,
                    ),
                    service: service.clone(),
                },
                timeout,
            ))),
            RedisTarget::Cluster(nodes) => {
                let connecting = async {
                    let client = ClusterClient::builder(nodes.iter().map(String::as_str))
                        .connection_timeout(timeout)
                        .response_timeout(timeout)
                        .retries(2)
                        .build()?;
                    client.get_async_connection().await
                };
                match tokio::time::timeout(timeout, connecting).await {
                    Ok(connection) => Link::Cluster(connection.map_err(LinkError::Redis)?),
                    Err(_) => return Err(LinkError::TimedOut),
                }
            }
        };
        // A single node (or a sentinel's primary) connects at its first call: a Redis that is
        // down when the service starts must not keep the service down (the Redis-down policy
        // applies, as it does to an outage later). A malformed URL has failed above.
        Ok(link)
    }

    /// Forgets a single node's connection after a failure that may have broken it.
    fn after_failure(&self, error: &LinkError) {
        if let Link::Single(node) = self {
            let broken = match error {
                LinkError::TimedOut => true,
                // READONLY: a failed-over primary, now a replica; the sentinels name the new
                // one at the next opening.
                LinkError::Redis(error) => {
                    error.is_io_error()
                        || error.is_connection_dropped()
                        || error.is_unrecoverable_error()
                        || error.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
                }
            };
            if broken {
                *node.connection.lock().expect("redis link poisoned") = None;
            }
        }
    }

    /// Runs a script invocation, bounded by `timeout`.
    pub(crate) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        timeout: Duration,
    ) -> Result<T, LinkError> {
        self.call(timeout, async |connection| {
            invocation.invoke_async(connection).await
        })
        .await
    }

    /// Runs one command, bounded by `timeout`.
    pub(crate) async fn query<T: FromRedisValue>(
        &self,
        command: &redis::Cmd,
        timeout: Duration,
    ) -> Result<T, LinkError> {
        self.call(timeout, async |connection| command.query_async(connection).await)
            .await
    }

    /// Runs `request` on a connection (a single node's is opened when there is none),
    /// bounded by `timeout`; a failure that may have broken the connection drops it.
    async fn call<T>(
        &self,
        timeout: Duration,
        request: impl AsyncFnOnce(&mut Connected) -> redis::RedisResult<T>,
    ) -> Result<T, LinkError> {
        let connected = match self {
            Link::Single(node) => node.connection(timeout).await.map(Connected::Single),
            Link::Cluster(connection) => Ok(Connected::Cluster(connection.clone())),
        };
        let result = match connected {
            Ok(mut connection) => match tokio::time::timeout(timeout, request(&mut connection)).await {
                Ok(answer) => answer.map_err(LinkError::Redis),
                Err(_) => Err(LinkError::TimedOut),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = &result {
            self.after_failure(error);
        }
        result
    }
}

/// A connection of either kind, so that each request is written once for both.
enum Connected {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Connected {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Connected::Single(connection) => connection.req_packed_command(cmd),
            Connected::Cluster(connection) => connection.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Connected::Single(connection) => connection.req_packed_commands(pipeline, offset, count),
            Connected::Cluster(connection) => connection.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connected::Single(connection) => connection.get_db(),
            Connected::Cluster(connection) => connection.get_db(),
        }
    }
}

impl SingleNode {
    fn new(source: NodeSource, timeout: Duration) -> Self {
        Self {
            source,
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout)),
            connection: Mutex::new(None),
        }
    }

    /// The connection, opened when there is none.
    async fn connection(&self, timeout: Duration) -> Result<MultiplexedConnection, LinkError> {
        if let Some(open) = self.connection.lock().expect("redis link poisoned").clone() {
            return Ok(open);
        }
        let opening = async {
            match &self.source {
                NodeSource::Fixed(client) => {
                    client
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await
                }
                NodeSource::Sentinel { sentinel, service } => {
                    let primary = sentinel.lock().await.async_master_for(service, None).await?;
                    primary
                        .get_multiplexed_async_connection_with_config(&self.config)
                        .await
                }
            }
        };
        let open = match tokio::time::timeout(timeout, opening).await {
            Ok(open) => open.map_err(LinkError::Redis)?,
            Err(_) => return Err(LinkError::TimedOut),
        };
        *self.connection.lock().expect("redis link poisoned") = Some(open.clone());
        Ok(open)
    }
}
