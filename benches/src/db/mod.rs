//! Databases: where the servers are, a fresh uniquely named database per run (made and
//! dropped by `stockguard-testkit`), and the bare sqlx pool the harness uses for setup, the
//! audit and the raw SQL paths.

mod setup;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use stockguard_api::DatabaseTarget;
use stockguard_testkit::{Backend, Server, TestDatabase, TestSqliteFile};

/// Prefix of every database the harness creates, so a leftover is recognisable.
pub const DATABASE_PREFIX: &str = "sg_bench_";

/// How long a raw SQLite connection waits for the write lock: the adapter's default busy
/// timeout, so the raw baseline waits like the library does (same WAL, `synchronous = FULL`).
pub const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(2);
/// SQLite admits one writer at a time; more connections only add writers polling the busy
/// handler (the adapter's default pool is 8), so SQLite pools are capped here.
pub const SQLITE_POOL_MAX: u32 = 8;
/// How long a raw request waits for a pooled connection.
pub const RAW_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);

/// The databases a run uses: those of `wanted` that answer. An unreachable one fails the run
/// when a database is `required` (CI), and is skipped with a loud warning otherwise; with no
/// server left, the run falls back to embedded SQLite (the third value says so).
pub async fn select(
    wanted: Vec<Backend>,
    required: bool,
) -> anyhow::Result<(Vec<Backend>, BTreeMap<Backend, String>, bool)> {
    let mut databases = Vec::new();
    let mut skipped = BTreeMap::new();
    for backend in wanted {
        match reachable(backend).await {
            Ok(()) => databases.push(backend),
            Err(reason) => {
                if required {
                    bail!(
                        "{backend} is unreachable ({reason}) and a database is required here \
                         (CI=true, STOCKGUARD_REQUIRE_DB=1 or --require-db). Start the server or set \
                         STOCKGUARD_PG_URL / STOCKGUARD_MYSQL_URL."
                    );
                }
                eprintln!("\n*** WARNING: {backend} is unreachable ({reason}); skipping it. ***\n");
                skipped.insert(backend, format!("unreachable: {reason}"));
            }
        }
    }
    let servers = databases.iter().any(|b| *b != Backend::Sqlite);
    let mut sqlite_fallback = false;
    if !servers {
        eprintln!(
            "\n**********************************************************************\n\
             *** NO DATABASE SERVER REACHABLE: falling back to embedded SQLite. ***\n\
             *** PostgreSQL/MariaDB figures will be missing from this report.  ***\n\
             **********************************************************************\n"
        );
        if !databases.contains(&Backend::Sqlite) {
            databases.push(Backend::Sqlite);
        }
        sqlite_fallback = true;
    }
    Ok((databases, skipped, sqlite_fallback))
}

/// Checks that the backend's server answers (within testkit's 5 s); SQLite always does.
pub async fn reachable(backend: Backend) -> Result<(), String> {
    let Some(server) = backend.server() else {
        return Ok(());
    };
    let url = server.admin_url();
    stockguard_testkit::reachable(server, &url)
        .await
        .map_err(|error| format!("{url}: {error}"))
}

/// A freshly created, uniquely named database for one run: a server database (testkit drops
/// it on `drop_now`, or from `Drop` after an early error) or a SQLite file in a temp dir.
#[derive(Debug)]
pub enum FreshDatabase {
    /// On PostgreSQL or MySQL/MariaDB.
    Server(TestDatabase),
    /// An embedded SQLite file.
    Sqlite(TestSqliteFile),
}

impl FreshDatabase {
    /// Creates one on the backend's server (the admin URL testkit reads from the
    /// environment, or the local default).
    pub async fn create(backend: Backend) -> anyhow::Result<Self> {
        match backend.server() {
            Some(server) => Self::create_on(backend, &server.admin_url()).await,
            None => Ok(Self::Sqlite(TestSqliteFile::new())),
        }
    }

    /// Creates one on the server at `admin_url` (a private server or cluster of `backend`'s
    /// kind).
    pub async fn create_on(backend: Backend, admin_url: &str) -> anyhow::Result<Self> {
        let server = backend
            .server()
            .with_context(|| format!("{backend} has no server"))?;
        let database = TestDatabase::create_at(server, admin_url, DATABASE_PREFIX)
            .await
            .with_context(|| format!("creating a fresh {backend} database on {admin_url}"))?;
        Ok(Self::Server(database))
    }

    /// Which backend it is on.
    pub fn backend(&self) -> Backend {
        match self {
            Self::Server(database) => match database.server() {
                Server::Postgres => Backend::Postgres,
                Server::MySql => Backend::MySql,
            },
            Self::Sqlite(_) => Backend::Sqlite,
        }
    }

    /// The URL of the new database, or for SQLite its file path.
    pub fn url(&self) -> String {
        match self {
            Self::Server(database) => database.url().to_owned(),
            Self::Sqlite(file) => file.path().display().to_string(),
        }
    }

    /// Where it lives, as the service and the store settings name it.
    pub fn target(&self) -> anyhow::Result<DatabaseTarget> {
        match self {
            Self::Server(database) => DatabaseTarget::parse(database.url()),
            Self::Sqlite(file) => Ok(DatabaseTarget::Sqlite(file.path())),
        }
    }

    /// Its name (SQLite: the file's path).
    pub fn name(&self) -> String {
        match self {
            Self::Server(database) => database.name().to_owned(),
            Self::Sqlite(file) => file.path().display().to_string(),
        }
    }

    /// Drops the database now (terminating leftover connections); a SQLite file goes with
    /// its temp dir.
    pub async fn drop_now(self) -> anyhow::Result<()> {
        match self {
            Self::Server(database) => {
                let name = database.name().to_owned();
                database
                    .drop_now()
                    .await
                    .with_context(|| format!("dropping bench database {name}"))
            }
            Self::Sqlite(_) => Ok(()),
        }
    }
}

/// A bare sqlx pool on the run's database: used for setup, the audit, the environment
/// queries, and the raw-SQL variants that bypass the library.
#[derive(Debug, Clone)]
pub enum RawPool {
    /// PostgreSQL.
    Postgres(PgPool),
    /// MySQL/MariaDB.
    MySql(MySqlPool),
    /// SQLite.
    Sqlite(SqlitePool),
}

impl RawPool {
    /// Opens a pool of `max_connections` on `database`.
    pub async fn connect(database: &FreshDatabase, max_connections: u32) -> anyhow::Result<Self> {
        let url = database.url();
        Ok(match database.backend() {
            Backend::Postgres => RawPool::Postgres(
                PgPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                    .connect(&url)
                    .await?,
            ),
            Backend::MySql => RawPool::MySql(
                MySqlPoolOptions::new()
                    .max_connections(max_connections)
                    .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                    .connect(&url)
                    .await?,
            ),
            Backend::Sqlite => {
                let options = SqliteConnectOptions::new()
                    .filename(&url)
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .synchronous(SqliteSynchronous::Full)
                    .foreign_keys(true)
                    .busy_timeout(SQLITE_BUSY_TIMEOUT);
                RawPool::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(max_connections)
                        .acquire_timeout(RAW_ACQUIRE_TIMEOUT)
                        .connect_with(options)
                        .await?,
                )
            }
        })
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            RawPool::Postgres(pool) => pool.close().await,
            RawPool::MySql(pool) => pool.close().await,
            RawPool::Sqlite(pool) => pool.close().await,
        }
    }
}

/// Version and durability settings, read from a throwaway database (SQLite: with the same
/// pragmas the raw pool uses; the adapter's own settings are in its docs).
pub async fn environment(backend: Backend) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let database = FreshDatabase::create(backend).await?;
    let pool = RawPool::connect(&database, 1).await?;
    let env = pool.environment().await;
    pool.close().await;
    database.drop_now().await?;
    env
}

/// Runs `case` in a fresh database of `backend` and drops the database afterwards, whatever
/// the case returned: the frame of every workload's case.
pub async fn in_fresh_database<T>(
    backend: Backend,
    case: impl AsyncFnOnce(&FreshDatabase) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let database = FreshDatabase::create(backend).await?;
    let result = case(&database).await;
    database.drop_now().await?;
    result
}
