//! The database side of a chaos cell: a private PostgreSQL or MariaDB server the runner
//! may restart, crash and starve, reached by the service through testkit's fault proxy,
//! and the runner's own direct connections that observe and kill the service's sessions.
//! The machine's shared servers are never touched.

use std::time::{Duration, SystemTime};

use crate::pg_ha_cluster::PgHa;
use anyhow::{Context, bail};
use serde::Serialize;
use sqlx::mysql::{MySqlConnection, MySqlDatabaseError};
use sqlx::postgres::PgConnection;
use sqlx::{AssertSqlSafe, Connection, Executor};
use stockguard_testkit::{
    Backend, FaultProxy, MariaDbOptions, PostgresOptions, PrivateGalera, PrivateMariaDb, PrivatePostgres,
    with_database,
};

/// The database the service works in, on the private server.
pub const DATABASE: &str = "chaos";
/// Connection slots of the private server: the service's pool, the runner's observers and
/// probes, and room for a restarted service's pool while the old sessions are still ending.
/// Low enough that the runner can fill it to provoke "too many connections".
pub const MAX_CONNECTIONS: u32 = 24;
/// Bound on one connect of the runner's own.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection the runner holds open (to fill the server's connection slots).
#[derive(Debug)]
pub enum Held {
    /// PostgreSQL.
    Pg(PgConnection),
    /// MariaDB.
    My(MySqlConnection),
}

impl Held {
    /// Rolls back whatever it holds and closes it; a connection the server already ended is
    /// simply dropped (its transaction is gone with it).
    pub async fn release(self) {
        match self {
            Held::Pg(mut conn) => {
                if conn.execute("ROLLBACK").await.is_ok() {
                    drop(conn.close().await);
                }
            }
            Held::My(mut conn) => {
                if conn.execute("ROLLBACK").await.is_ok() {
                    drop(conn.close().await);
                }
            }
        }
    }
}

/// Every SKU row, then every bucket, in key order (the order the service locks in, so the
/// holder waits behind the service's transactions rather than deadlocking with them).
/// `FOR UPDATE` also blocks the ledger's foreign-key checks on PostgreSQL.
const LOCK_EVERY_ROW: [&str; 2] = [
    "SELECT sku FROM inventory ORDER BY sku FOR UPDATE",
    "SELECT sku FROM inventory_bucket ORDER BY sku, bucket FOR UPDATE",
];
/// How long the holder itself may wait for a row the service holds.
const HOLDER_LOCK_WAIT_S: u32 = 3;

/// A cell's database when it is a cluster rather than one server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cluster {
    /// A private 3-node MariaDB Galera cluster (`galera:` cells).
    Galera,
    /// A private PostgreSQL primary with a synchronous standby under Patroni, behind haproxy
    /// (`pgha:` cells; `.ci/pg-ha`).
    PgHa,
}

impl Cluster {
    /// The name in cells.
    pub fn as_str(self) -> &'static str {
        match self {
            Cluster::Galera => "galera",
            Cluster::PgHa => "pgha",
        }
    }

    /// The database kind its nodes run.
    pub fn backend(self) -> Backend {
        match self {
            Cluster::Galera => Backend::MySql,
            Cluster::PgHa => Backend::Postgres,
        }
    }
}

/// Nodes of a `galera:` cell's cluster. The service and the runner talk to the first; the
/// others replicate every write and are killed and rejoined by `peer_crash`.
pub const GALERA_NODES: usize = 3;
/// The node the service is connected to.
const SERVICE_NODE: usize = 0;
/// The node `peer_crash` kills.
const PEER_NODE: usize = 1;

#[derive(Debug)]
enum Private {
    Postgres(PrivatePostgres),
    MariaDb(PrivateMariaDb),
    Galera(PrivateGalera),
    PgHa(PgHa),
}

impl Private {
    /// The MariaDB server the service talks to: the standalone one, or the service's node.
    fn mariadb(&self) -> Option<&PrivateMariaDb> {
        match self {
            Private::Postgres(_) | Private::PgHa(_) => None,
            Private::MariaDb(server) => Some(server),
            Private::Galera(cluster) => cluster.nodes().get(SERVICE_NODE),
        }
    }
}

/// A private server with one database, behind a fault proxy.
#[derive(Debug)]
pub struct ServerUnderTest {
    private: Private,
    proxy: FaultProxy,
}

impl ServerUnderTest {
    /// Starts a private server for `backend` (PostgreSQL or MySQL/MariaDB), or a private
    /// `cluster` of its kind, creates the database and puts a proxy in front of it (of the
    /// service's node on Galera, of haproxy on PostgreSQL HA).
    pub async fn start(backend: Backend, cluster: Option<Cluster>) -> anyhow::Result<Self> {
        if let Some(cluster) = cluster
            && cluster.backend() != backend
        {
            bail!("a {} cluster runs {}", cluster.as_str(), cluster.backend());
        }
        let private = match (backend, cluster) {
            (Backend::Postgres, None) => Private::Postgres(
                PrivatePostgres::start(PostgresOptions::new().max_connections(MAX_CONNECTIONS))
                    .await
                    .context("starting a private PostgreSQL")?,
            ),
            (Backend::Postgres, Some(_)) => Private::PgHa(PgHa::start().await?),
            (Backend::MySql, Some(_)) => Private::Galera(
                PrivateGalera::start(GALERA_NODES)
                    .await
                    .context("starting a private Galera cluster")?,
            ),
            (Backend::MySql, None) => Private::MariaDb(
                PrivateMariaDb::start(MariaDbOptions::new().max_connections(MAX_CONNECTIONS))
                    .await
                    .context("starting a private MariaDB")?,
            ),
            (Backend::Sqlite, _) => bail!("SQLite has no server"),
        };
        let proxy = FaultProxy::start(format!("127.0.0.1:{}", port(&private)))
            .await
            .context("starting the fault proxy")?;
        let server = Self { private, proxy };
        server.admin_execute(&server.create_database_sql()).await?;
        Ok(server)
    }

    fn create_database_sql(&self) -> String {
        match self.private {
            Private::Postgres(_) | Private::PgHa(_) => format!("CREATE DATABASE {DATABASE}"),
            Private::MariaDb(_) | Private::Galera(_) => {
                format!("CREATE DATABASE {DATABASE} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            }
        }
    }

    /// Which backend.
    pub fn backend(&self) -> Backend {
        match self.private {
            Private::Postgres(_) | Private::PgHa(_) => Backend::Postgres,
            Private::MariaDb(_) | Private::Galera(_) => Backend::MySql,
        }
    }

    fn admin_url(&self) -> String {
        match (&self.private, self.private.mariadb()) {
            (Private::Postgres(server), _) => server.url(),
            (Private::PgHa(cluster), _) => cluster.url.clone(),
            (_, Some(server)) => server.url(),
            (_, None) => String::new(),
        }
    }

    /// The database, reached directly (the checker's and the audit's way in).
    pub fn direct_url(&self) -> String {
        with_database(&self.admin_url(), DATABASE)
    }

    /// The database, reached through the proxy (the service's way in).
    pub fn service_url(&self) -> String {
        self.proxy.proxied_url(&self.direct_url())
    }

    /// The proxy between the service and the server.
    pub fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    /// The server process's id (a new one after every restart).
    pub fn pid(&self) -> Option<u32> {
        match (&self.private, self.private.mariadb()) {
            (Private::Postgres(server), _) => server.pid(),
            (Private::PgHa(cluster), _) => cluster.primary_pid(),
            (_, server) => server.and_then(PrivateMariaDb::pid),
        }
    }

    /// When the running server started, as the server itself reports it.
    pub async fn started_at(&self) -> anyhow::Result<SystemTime> {
        Ok(match (&self.private, self.private.mariadb()) {
            (Private::Postgres(server), _) => server.started_at().await?,
            (Private::PgHa(cluster), _) => cluster.started_at().await?,
            (_, Some(server)) => server.started_at().await?,
            (_, None) => bail!("the Galera cluster has no service node"),
        })
    }

    /// Restarts the server: a clean shutdown, or (`crash`) SIGKILL and crash recovery. On
    /// Galera, the service's node, which then rejoins the cluster (IST from a peer), and the
    /// restart ends once it is synced again. On PostgreSQL HA, the primary, and the restart
    /// ends once the promoted standby has the old primary back as its synchronous standby.
    /// Returns what it did, in words.
    pub async fn restart(&mut self, crash: bool) -> anyhow::Result<&'static str> {
        match &mut self.private {
            Private::Postgres(server) => {
                if crash {
                    server.kill().await;
                }
                server.restart().await?;
            }
            Private::MariaDb(server) => {
                if crash {
                    server.kill().await;
                }
                server.restart().await?;
            }
            Private::Galera(cluster) => restart_node(cluster, SERVICE_NODE, crash).await?,
            Private::PgHa(cluster) => {
                cluster.fail_over(crash).await?;
                return Ok(if crash {
                    "WAL senders stalled, primary SIGKILLed, standby promoted, old primary rejoined"
                } else {
                    "primary stopped, standby promoted, old primary rejoined"
                });
            }
        }
        Ok(if crash {
            "SIGKILL and crash recovery"
        } else {
            "clean restart"
        })
    }

    /// Galera only: SIGKILLs a node the service does not talk to, starts it again and waits
    /// until it has rejoined and synced. Meanwhile the service's node stays primary (2 of 3)
    /// and keeps certifying writes.
    pub async fn crash_peer(&mut self) -> anyhow::Result<()> {
        match &mut self.private {
            Private::Galera(cluster) => restart_node(cluster, PEER_NODE, true).await,
            _ => bail!("peer_crash needs a Galera cluster"),
        }
    }

    /// Ids of the sessions in the service's database, other than the runner's own.
    pub async fn service_sessions(&self) -> anyhow::Result<Vec<i64>> {
        let url = self.admin_url();
        Ok(match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                let ids = sqlx::query_scalar(
                    "SELECT pid::bigint FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                )
                .bind(DATABASE)
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                ids
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                let ids = sqlx::query_scalar(
                    "SELECT CAST(ID AS SIGNED) FROM information_schema.PROCESSLIST \
                     WHERE DB = ? AND ID <> CONNECTION_ID()",
                )
                .bind(DATABASE)
                .fetch_all(&mut conn)
                .await?;
                conn.close().await?;
                ids
            }
        })
    }

    /// Ends sessions the way an operator would: `pg_terminate_backend` or `KILL CONNECTION`.
    /// Sessions already gone are skipped.
    pub async fn kill_sessions(&self, ids: &[i64]) -> anyhow::Result<()> {
        let url = self.admin_url();
        match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                for id in ids {
                    sqlx::query("SELECT pg_terminate_backend($1::int)")
                        .bind(id)
                        .execute(&mut conn)
                        .await?;
                }
                conn.close().await?;
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                for id in ids {
                    // 1094: unknown thread id, i.e. the session ended on its own meanwhile.
                    if let Err(error) = conn.execute(AssertSqlSafe(format!("KILL CONNECTION {id}"))).await
                        && mysql_number(&error) != Some(1094)
                    {
                        return Err(error.into());
                    }
                }
                conn.close().await?;
            }
        }
        Ok(())
    }

    /// Sessions in the service's database that are running a statement or hold an open
    /// transaction.
    pub async fn busy_sessions(&self) -> anyhow::Result<i64> {
        let url = self.admin_url();
        Ok(match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                let busy = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND pid <> pg_backend_pid() AND state IS DISTINCT FROM 'idle'",
                )
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                busy
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                let busy = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST p \
                     WHERE p.DB = ? AND p.ID <> CONNECTION_ID() AND (p.COMMAND <> 'Sleep' \
                       OR EXISTS (SELECT 1 FROM information_schema.INNODB_TRX t \
                                  WHERE t.trx_mysql_thread_id = p.ID))",
                )
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                busy
            }
        })
    }

    /// Opens a transaction on a direct connection that locks every SKU row and bucket, as a
    /// long admin job would; the locks hold until [`Held::release`]. Returns the holder and
    /// how many rows it locked.
    pub async fn lock_every_row(&self) -> anyhow::Result<(Held, usize)> {
        let url = self.direct_url();
        let mut locked = 0;
        Ok(match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                conn.execute(AssertSqlSafe(format!(
                    "SET lock_timeout = '{HOLDER_LOCK_WAIT_S}s'"
                )))
                .await?;
                conn.execute("BEGIN").await?;
                for sql in LOCK_EVERY_ROW {
                    locked += sqlx::query(sql).fetch_all(&mut conn).await?.len();
                }
                (Held::Pg(conn), locked)
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                conn.execute(AssertSqlSafe(format!(
                    "SET SESSION innodb_lock_wait_timeout = {HOLDER_LOCK_WAIT_S}"
                )))
                .await?;
                conn.execute("BEGIN").await?;
                for sql in LOCK_EVERY_ROW {
                    locked += sqlx::query(sql).fetch_all(&mut conn).await?.len();
                }
                (Held::My(conn), locked)
            }
        })
    }

    /// Sessions in the service's database waiting for a row lock right now.
    pub async fn lock_waiters(&self) -> anyhow::Result<i64> {
        let url = self.admin_url();
        Ok(match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                let waiting = sqlx::query_scalar(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
                     AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'",
                )
                .bind(DATABASE)
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                waiting
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                let waiting = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.INNODB_TRX WHERE trx_state = 'LOCK WAIT'",
                )
                .fetch_one(&mut conn)
                .await?;
                conn.close().await?;
                waiting
            }
        })
    }

    /// Opens direct connections until the server refuses one for lack of slots (at most
    /// [`MAX_CONNECTIONS`] + 5 tries). Returns the held connections and the refusal's
    /// message, or `None` if no refusal came.
    pub async fn fill_connection_slots(&self) -> (Vec<Held>, Option<String>) {
        let url = self.admin_url();
        let mut held = Vec::new();
        for _ in 0..MAX_CONNECTIONS + 5 {
            let attempt = match self.private {
                Private::Postgres(_) | Private::PgHa(_) => pg(&url).await.map(Held::Pg),
                Private::MariaDb(_) | Private::Galera(_) => my(&url).await.map(Held::My),
            };
            match attempt {
                Ok(conn) => held.push(conn),
                Err(error) => {
                    let too_many = error
                        .downcast_ref::<sqlx::Error>()
                        .is_some_and(is_too_many_connections);
                    if too_many {
                        return (held, Some(format!("{error:#}")));
                    }
                }
            }
        }
        (held, None)
    }

    /// Connects through the proxy and runs `SELECT 1` within `limit`; the time it took.
    pub async fn probe_through_proxy(&self, limit: Duration) -> Result<Duration, String> {
        let url = self.proxy.proxied_url(&self.admin_url());
        let started = std::time::Instant::now();
        let backend = self.backend();
        let probe = async move {
            match backend {
                Backend::Postgres => {
                    let mut conn = PgConnection::connect(&url).await?;
                    conn.execute("SELECT 1").await?;
                    conn.close().await
                }
                _ => {
                    let mut conn = MySqlConnection::connect(&url).await?;
                    conn.execute("SELECT 1").await?;
                    conn.close().await
                }
            }
        };
        match tokio::time::timeout(limit, probe).await {
            Ok(Ok(())) => Ok(started.elapsed()),
            // An error the server itself sent came through the proxy, so the proxy forwards:
            // after a blackhole, sessions the server still holds for the dead link can fill
            // its slots for a moment, and "too many connections" is then the answer.
            Ok(Err(sqlx::Error::Database(_))) => Ok(started.elapsed()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!("no answer within {limit:?}")),
        }
    }

    async fn admin_execute(&self, sql: &str) -> anyhow::Result<()> {
        let url = self.admin_url();
        match self.private {
            Private::Postgres(_) | Private::PgHa(_) => {
                let mut conn = pg(&url).await?;
                conn.execute(AssertSqlSafe(sql.to_owned())).await?;
                conn.close().await?;
            }
            Private::MariaDb(_) | Private::Galera(_) => {
                let mut conn = my(&url).await?;
                conn.execute(AssertSqlSafe(sql.to_owned())).await?;
                conn.close().await?;
            }
        }
        Ok(())
    }

    /// The server's log tail, for a failure message.
    pub fn log_tail(&self) -> String {
        match &self.private {
            Private::Postgres(server) => server.log_tail(),
            Private::MariaDb(server) => server.log_tail(),
            Private::Galera(cluster) => cluster
                .nodes()
                .iter()
                .enumerate()
                .map(|(index, node)| format!("--- node {index}\n{}", node.log_tail()))
                .collect(),
            Private::PgHa(cluster) => cluster.log_tail(),
        }
    }
}

/// Kills (`crash`) or cleanly stops a Galera node, starts it again and waits until it is
/// synced in a primary component of every node.
async fn restart_node(cluster: &mut PrivateGalera, index: usize, crash: bool) -> anyhow::Result<()> {
    let node = cluster
        .node_mut(index)
        .with_context(|| format!("no Galera node {index}"))?;
    if crash {
        node.kill().await;
    }
    node.restart()
        .await
        .with_context(|| format!("restarting Galera node {index}"))?;
    cluster
        .wait_synced(index, GALERA_NODES)
        .await
        .with_context(|| format!("Galera node {index} rejoining"))?;
    Ok(())
}

fn port(private: &Private) -> u16 {
    match (private, private.mariadb()) {
        (Private::Postgres(server), _) => server.port(),
        (Private::PgHa(cluster), _) => cluster.port,
        (_, server) => server.map_or(0, PrivateMariaDb::port),
    }
}

async fn pg(url: &str) -> anyhow::Result<PgConnection> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect(url))
        .await
        .context("connecting to the private PostgreSQL timed out")??;
    Ok(conn)
}

async fn my(url: &str) -> anyhow::Result<MySqlConnection> {
    let conn = tokio::time::timeout(CONNECT_TIMEOUT, MySqlConnection::connect(url))
        .await
        .context("connecting to the private MariaDB timed out")??;
    Ok(conn)
}

fn mysql_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// PostgreSQL 53300, MySQL/MariaDB 1040 (too many connections) or 1203 (user limit).
fn is_too_many_connections(error: &sqlx::Error) -> bool {
    let pg = matches!(error, sqlx::Error::Database(db) if db.code().as_deref() == Some("53300"));
    pg || matches!(mysql_number(error), Some(1040 | 1203))
}
