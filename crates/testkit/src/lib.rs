//! Test support for stockguard: every test gets its own uniquely named database on a real
//! server and drops it afterwards, because CI reuses machines that earlier runs have used.
//!
//! Where the server comes from, in order:
//! 1. the admin URL in `STOCKGUARD_PG_URL` / `STOCKGUARD_MYSQL_URL`, if set;
//! 2. the local default (`postgres://postgres@127.0.0.1:5432/postgres`,
//!    `mysql://root@127.0.0.1:3306/mysql`), if it answers;
//! 3. a testcontainers container, if neither URL variable is set and Docker answers;
//! 4. otherwise the test is skipped with a loud message on stderr, unless `CI=true` or
//!    `STOCKGUARD_REQUIRE_DB=1`, where a missing database is a failure.

use std::any::Any;
use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::{Connection, Executor};

/// Environment variable holding a PostgreSQL admin URL (a database the tests may connect to
/// in order to create and drop their own).
pub const PG_URL_ENV: &str = "STOCKGUARD_PG_URL";
/// Environment variable holding a MySQL/MariaDB admin URL.
pub const MYSQL_URL_ENV: &str = "STOCKGUARD_MYSQL_URL";
/// Set to `1` to turn a skipped database test into a failure (CI sets `CI=true`, which does the same).
pub const REQUIRE_DB_ENV: &str = "STOCKGUARD_REQUIRE_DB";
/// The local PostgreSQL this machine kind runs.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// The local MariaDB this machine kind runs.
pub const DEFAULT_MYSQL_URL: &str = "mysql://root@127.0.0.1:3306/mysql";

/// Prefix of the databases [`TestDatabase::postgres`] and [`TestDatabase::mysql`] create.
pub const TEST_DATABASE_PREFIX: &str = "sg_test_";

/// Which database, servers and embedded SQLite alike: the one list of backends that tests
/// and the bench share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB (one protocol, one adapter).
    MySql,
    /// Embedded SQLite: a file, no server.
    Sqlite,
}

impl Backend {
    /// Every backend, servers first.
    pub const ALL: [Backend; 3] = [Backend::Postgres, Backend::MySql, Backend::Sqlite];

    /// The stable name used in flags, files and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::MySql => "mysql",
            Backend::Sqlite => "sqlite",
        }
    }

    /// The server it runs on; `None` for embedded SQLite.
    pub fn server(self) -> Option<Server> {
        match self {
            Backend::Postgres => Some(Server::Postgres),
            Backend::MySql => Some(Server::MySql),
            Backend::Sqlite => None,
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Backend {
    type Err = String;
    /// The names of [`Backend::as_str`], and `pg`, `postgresql` and `mariadb` as aliases.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match raw {
            "postgres" | "postgresql" | "pg" => Ok(Backend::Postgres),
            "mysql" | "mariadb" => Ok(Backend::MySql),
            "sqlite" => Ok(Backend::Sqlite),
            _ => Err(format!(
                "unknown database {raw:?}: use postgres, mysql (or mariadb) or sqlite"
            )),
        }
    }
}

/// Which server family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// PostgreSQL.
    Postgres,
    /// MySQL or MariaDB.
    MySql,
}

impl Server {
    fn env(self) -> &'static str {
        match self {
            Server::Postgres => PG_URL_ENV,
            Server::MySql => MYSQL_URL_ENV,
        }
    }

    fn default_url(self) -> &'static str {
        match self {
            Server::Postgres => DEFAULT_PG_URL,
            Server::MySql => DEFAULT_MYSQL_URL,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Server::Postgres => "PostgreSQL",
            Server::MySql => "MySQL/MariaDB",
        }
    }

    /// The admin URL the environment names, else the local default; not probed (see
    /// [`reachable`]). For callers with their own policy for a missing server.
    pub fn admin_url(self) -> String {
        std::env::var(self.env()).unwrap_or_else(|_| self.default_url().to_owned())
    }
}

/// True when a missing database must fail rather than skip.
pub fn database_required() -> bool {
    let set = |name: &str| {
        std::env::var(name)
            .map(|v| matches!(v.as_str(), "1" | "true" | "TRUE" | "yes"))
            .unwrap_or(false)
    };
    set("CI") || set(REQUIRE_DB_ENV)
}

/// A freshly created, uniquely named database; dropped (with its connections) on drop.
pub struct TestDatabase {
    server: Server,
    admin_url: String,
    name: String,
    url: String,
    // Set by `drop_now`, so `Drop` does not drop the database a second time.
    dropped: bool,
    // Declared last so the container outlives the DROP DATABASE in `Drop`.
    _container: Option<Box<dyn Any + Send + Sync>>,
}

impl std::fmt::Debug for TestDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDatabase")
            .field("server", &self.server)
            .field("name", &self.name)
            .finish()
    }
}

impl TestDatabase {
    /// A fresh PostgreSQL database, or `None` (after a loud message) when none can be had
    /// and a database is not required.
    pub async fn postgres() -> Option<Self> {
        Self::create(Server::Postgres).await
    }

    /// A fresh MySQL/MariaDB database, or `None` as for [`TestDatabase::postgres`].
    pub async fn mysql() -> Option<Self> {
        Self::create(Server::MySql).await
    }

    /// The URL of the new database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The new database's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Which server it lives on.
    pub fn server(&self) -> Server {
        self.server
    }

    /// Creates a uniquely named database on `server`.
    pub async fn create(server: Server) -> Option<Self> {
        let (admin_url, container) = match locate(server).await {
            Ok(found) => found,
            Err(reason) => return skip_or_fail(server, &reason),
        };
        let name = unique_name();
        if let Err(error) = create_database(server, &admin_url, &name).await {
            panic!("could not create test database {name} on {admin_url}: {error}");
        }
        Some(Self::created(server, admin_url, name, container))
    }

    /// Creates a database named `{prefix}{unique suffix}` on the server at `admin_url`,
    /// without the fallbacks of [`TestDatabase::create`]: for callers (the bench) that find
    /// their servers and decide what a missing one means themselves.
    pub async fn create_at(server: Server, admin_url: &str, prefix: &str) -> Result<Self, sqlx::Error> {
        let name = unique_name_with(prefix);
        create_database(server, admin_url, &name).await?;
        Ok(Self::created(server, admin_url.to_owned(), name, None))
    }

    fn created(
        server: Server,
        admin_url: String,
        name: String,
        container: Option<Box<dyn Any + Send + Sync>>,
    ) -> Self {
        let url = with_database(&admin_url, &name);
        Self {
            server,
            admin_url,
            name,
            url,
            dropped: false,
            _container: container,
        }
    }

    /// Drops the database now (with its connections) and reports a failure, where `Drop`
    /// can only warn.
    pub async fn drop_now(mut self) -> Result<(), sqlx::Error> {
        self.dropped = true;
        drop_database(self.server, &self.admin_url, &self.name).await
    }
}

async fn create_database(server: Server, admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    match server {
        Server::Postgres => {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .await?;
            admin.close().await
        }
        Server::MySql => {
            let mut admin = sqlx::MySqlConnection::connect(admin_url).await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
                )))
                .await?;
            admin.close().await
        }
    }
}

async fn drop_database(server: Server, admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    match server {
        Server::Postgres => {
            let mut admin = sqlx::PgConnection::connect(admin_url).await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
                )))
                .await?;
            admin.close().await
        }
        Server::MySql => {
            let mut admin = sqlx::MySqlConnection::connect(admin_url).await?;
            admin
                .execute(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{name}`")))
                .await?;
            admin.close().await
        }
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let (server, admin_url, name) = (self.server, self.admin_url.clone(), self.name.clone());
        // Drop runs inside a tokio runtime in most tests, where blocking on a future is not
        // allowed; a plain thread with its own runtime is.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime for dropping the test database");
            runtime.block_on(drop_database(server, &admin_url, &name))
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop test database {} ({dropped:?})",
                self.name
            );
        }
    }
}

/// A SQLite file in a fresh temporary directory, removed on drop.
#[derive(Debug)]
pub struct TestSqliteFile {
    dir: tempfile::TempDir,
}

impl TestSqliteFile {
    /// A new, not yet existing, database file path in its own temp dir.
    pub fn new() -> Self {
        Self {
            dir: tempfile::Builder::new()
                .prefix("stockguard-sqlite-")
                .tempdir()
                .expect("temp dir for sqlite"),
        }
    }

    /// The database file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("stockguard.db")
    }
}

impl Default for TestSqliteFile {
    fn default() -> Self {
        Self::new()
    }
}

/// A name no earlier run on this machine has used.
pub fn unique_name() -> String {
    unique_name_with(TEST_DATABASE_PREFIX)
}

fn unique_name_with(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

/// Replaces the database path of a URL (`…/admin_db?params` → `…/name?params`).
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let root = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{root}/{name}?{query}"),
        None => format!("{root}/{name}"),
    }
}

/// Whether the server at `url` accepts a connection within 5 s; the error says why not.
pub async fn reachable(server: Server, url: &str) -> Result<(), String> {
    let attempt = async {
        match server {
            Server::Postgres => sqlx::PgConnection::connect(url).await?.close().await,
            Server::MySql => sqlx::MySqlConnection::connect(url).await?.close().await,
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), attempt).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err("connection timed out after 5 s".to_owned()),
    }
}

type Located = (String, Option<Box<dyn Any + Send + Sync>>);

async fn locate(server: Server) -> Result<Located, String> {
    if let Ok(url) = std::env::var(server.env()) {
        return reachable(server, &url)
            .await
            .map(|()| (url.clone(), None))
            .map_err(|e| format!("{} is set to {url} but it is unreachable: {e}", server.env()));
    }
    let default_error = match reachable(server, server.default_url()).await {
        Ok(()) => return Ok((server.default_url().to_owned(), None)),
        Err(error) => error,
    };
    match start_container(server).await {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(format!(
            "the local default {} is unreachable ({default_error}) and no Docker engine answered",
            server.default_url()
        )),
        Err(error) => Err(format!(
            "the local default {} is unreachable ({default_error}) and testcontainers failed: {error}",
            server.default_url()
        )),
    }
}

fn skip_or_fail<T>(server: Server, reason: &str) -> Option<T> {
    let message = format!(
        "no {label} for this test: {reason}.\n  Options: (1) start the local server ({default}); \
         (2) set {env} to an admin URL; (3) start a Docker engine so testcontainers can run one.",
        label = server.label(),
        default = server.default_url(),
        env = server.env(),
    );
    if database_required() {
        panic!("{message}\n  A database is required here (CI=true or {REQUIRE_DB_ENV}=1).");
    }
    // Written to the raw stderr handle so the test harness's capture cannot hide it.
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED DATABASE TEST *** {message}\n");
    None
}

#[cfg(feature = "docker")]
async fn start_container(server: Server) -> Result<Option<Located>, String> {
    use testcontainers_modules::testcontainers::runners::AsyncRunner;

    let docker_answers = std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !docker_answers {
        return Ok(None);
    }
    match server {
        Server::Postgres => {
            let container = testcontainers_modules::postgres::Postgres::default()
                .start()
                .await
                .map_err(|e| e.to_string())?;
            let port = container
                .get_host_port_ipv4(5432)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres");
            Ok(Some((url, Some(Box::new(container)))))
        }
        Server::MySql => {
            let container = testcontainers_modules::mariadb::Mariadb::default()
                .start()
                .await
                .map_err(|e| e.to_string())?;
            let port = container
                .get_host_port_ipv4(3306)
                .await
                .map_err(|e| e.to_string())?;
            let url = format!("mysql://root@127.0.0.1:{port}/mysql");
            Ok(Some((url, Some(Box::new(container)))))
        }
    }
}

#[cfg(not(feature = "docker"))]
async fn start_container(_server: Server) -> Result<Option<Located>, String> {
    Ok(None)
}

pub mod private_server;
pub mod proxy;

pub use private_server::{
    MariaDbOptions, PostgresOptions, PrivateGalera, PrivateMariaDb, PrivatePostgres, PrivateRedis,
    PrivateRedisCluster, PrivateRedisNode, PrivateRedisSentinel, SENTINEL_SERVICE, ServerError,
    postgres_started_at,
};
pub use proxy::{CutHandle, CutMode, CutPlan, CutReport, FaultProxy};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_path_is_replaced_and_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306", "y"),
            "mysql://root@127.0.0.1:3306/y"
        );
    }

    #[test]
    fn backends_round_trip_through_their_names() {
        for backend in Backend::ALL {
            assert_eq!(backend.as_str().parse::<Backend>(), Ok(backend));
            assert_eq!(backend.to_string(), backend.as_str());
        }
        assert_eq!("mariadb".parse::<Backend>(), Ok(Backend::MySql));
        assert_eq!("pg".parse::<Backend>(), Ok(Backend::Postgres));
        assert!("oracle".parse::<Backend>().is_err());
        assert_eq!(Backend::Sqlite.server(), None);
    }
}
