//! Every limit of the MySQL/MariaDB adapter, explicit, and what differs between the two servers.

use std::time::Duration;

use stockguard_core::EngineConfig;

/// How the adapter connects and what it allows; the engine's settings ride along.
#[derive(Clone)]
pub struct MySqlConfig {
    /// Connection URL (`mysql://user:password@host:port/database`). Never logged.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a row lock before `LockTimeout`. Applied as the session's
    /// `innodb_lock_wait_timeout`, which has whole-second granularity: rounded up, at least 1 s.
    pub lock_timeout: Duration,
    /// Upper bound on any statement: MariaDB `max_statement_time` (every statement), MySQL
    /// `max_execution_time` (read-only `SELECT`s only; MySQL has no general bound).
    pub statement_timeout: Duration,
    /// Deadline, retries, group commit and `Sharded` settings.
    pub engine: EngineConfig,
}

/// Leaves the URL out: it may carry a password.
impl std::fmt::Debug for MySqlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MySqlConfig")
            .field("url", &"<not shown>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("engine", &self.engine)
            .finish()
    }
}

impl MySqlConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            engine: EngineConfig::default(),
        }
    }
}

/// Which server answers. The two differ in a few places, each handled by a named method here
/// or by listing both error numbers in the error mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFlavor {
    /// MariaDB (10.6+ for `NOWAIT`, `SKIP LOCKED` and `INSERT … RETURNING`).
    MariaDb,
    /// Oracle MySQL (8.0.19+ for enforced CHECK constraints and the row alias in
    /// `ON DUPLICATE KEY UPDATE`).
    MySql,
}

/// The largest `innodb_lock_wait_timeout` both servers accept, in seconds.
const LOCK_WAIT_TIMEOUT_MAX_SECS: u128 = 1_073_741_824;

impl ServerFlavor {
    /// Tells the servers apart by `SELECT VERSION()`: MariaDB's contains `MariaDB`.
    pub fn from_version(version: &str) -> Self {
        if version.contains("MariaDB") {
            ServerFlavor::MariaDb
        } else {
            ServerFlavor::MySql
        }
    }

    /// The name the store reports.
    pub fn backend(self) -> &'static str {
        match self {
            ServerFlavor::MariaDb => "mariadb",
            ServerFlavor::MySql => "mysql",
        }
    }

    /// The session statement time bound. The variable's name, unit and reach differ:
    /// MariaDB `max_statement_time` is in seconds and bounds every statement; MySQL
    /// `max_execution_time` is in milliseconds and bounds read-only `SELECT`s only.
    fn statement_time_bound(self, bound: Duration) -> String {
        // 0 disables the bound on both servers, so never send 0.
        let bound_ms = bound.as_millis().max(1);
        match self {
            ServerFlavor::MariaDb => format!(
                "SET SESSION max_statement_time = {}.{:03}",
                bound_ms / 1000,
                bound_ms % 1000
            ),
            ServerFlavor::MySql => format!("SET SESSION max_execution_time = {bound_ms}"),
        }
    }
}

/// The statements run on every new pooled connection, before it is handed out.
pub(crate) fn session_statements(flavor: ServerFlavor, config: &MySqlConfig) -> Vec<String> {
    let lock_wait_timeout_secs = config
        .lock_timeout
        .as_millis()
        .div_ceil(1000)
        .clamp(1, LOCK_WAIT_TIMEOUT_MAX_SECS);
    vec![
        // READ COMMITTED, like PostgreSQL's default: every statement (not every transaction)
        // reads the latest committed data, and InnoDB takes no gap locks. See docs/mysql.md.
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
        // Never the 50 s server default: a request waits for a row lock at most this long.
        format!("SET SESSION innodb_lock_wait_timeout = {lock_wait_timeout_secs}"),
        // Strict mode turns a would-be truncation or out-of-range value into an error on
        // every table, instead of a warning and a silently altered row.
        "SET SESSION sql_mode = CONCAT(@@SESSION.sql_mode, ',STRICT_ALL_TABLES')".to_owned(),
        flavor.statement_time_bound(config.statement_timeout),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flavor_is_read_from_the_version_string() {
        assert_eq!(
            ServerFlavor::from_version("10.11.19-MariaDB-0+deb12u1"),
            ServerFlavor::MariaDb
        );
        assert_eq!(ServerFlavor::from_version("8.4.3"), ServerFlavor::MySql);
    }

    #[test]
    fn session_settings_round_the_lock_wait_up_to_whole_seconds() {
        let mut config = MySqlConfig::new("mysql://unused");
        config.lock_timeout = Duration::from_millis(1);
        config.statement_timeout = Duration::from_millis(2_500);
        let statements = session_statements(ServerFlavor::MariaDb, &config);
        assert!(statements.contains(&"SET SESSION innodb_lock_wait_timeout = 1".to_owned()));
        assert!(statements.contains(&"SET SESSION max_statement_time = 2.500".to_owned()));
        config.lock_timeout = Duration::from_millis(2_001);
        let statements = session_statements(ServerFlavor::MySql, &config);
        assert!(statements.contains(&"SET SESSION innodb_lock_wait_timeout = 3".to_owned()));
        assert!(statements.contains(&"SET SESSION max_execution_time = 2500".to_owned()));
    }
}

/// Prepared statements kept per connection. A coalesced batch's statements have one text per
/// row count, so sqlx's default of 100 thrashes under load (a re-prepare per statement: at
/// the hot point, 4,125 vs 5,698 orders/s on MariaDB). Up to 512 per connection, and at most
/// `PREPARED_STATEMENTS_PER_POOL` over the pool, half the server's default
/// `max_prepared_stmt_count` (16,382), so a full pool never hits it.
pub(crate) fn statement_cache_capacity(max_connections: u32) -> usize {
    let per_connection =
        PREPARED_STATEMENTS_PER_POOL / usize::try_from(max_connections.max(1)).unwrap_or(usize::MAX);
    per_connection.clamp(100, 512)
}

/// See [`statement_cache_capacity`].
const PREPARED_STATEMENTS_PER_POOL: usize = 8_192;

#[cfg(test)]
mod statement_cache_tests {
    use super::*;

    #[test]
    fn the_pool_never_holds_more_prepared_statements_than_half_the_server_default() {
        assert_eq!(statement_cache_capacity(16), 512);
        assert_eq!(statement_cache_capacity(32), 256);
        for connections in [1, 16, 17, 64, 81] {
            let held = statement_cache_capacity(connections) * connections as usize;
            assert!(held <= PREPARED_STATEMENTS_PER_POOL, "{connections}: {held}");
        }
        // Never below sqlx's own default, however large the pool.
        assert_eq!(statement_cache_capacity(1_000), 100);
    }
}
