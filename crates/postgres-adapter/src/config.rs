//! Every limit of the PostgreSQL adapter, explicit.

use std::time::Duration;

use stockguard_core::EngineConfig;

/// How the adapter connects and what it allows; the engine's settings ride along.
#[derive(Clone)]
pub struct PgConfig {
    /// Connection URL. Never logged: it may carry a password.
    pub url: String,
    /// Most connections in the pool.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a statement waits for a row lock before `LockTimeout` (session `lock_timeout`).
    pub lock_timeout: Duration,
    /// Upper bound on any statement (session `statement_timeout`).
    pub statement_timeout: Duration,
    /// How long a session may sit idle inside a transaction before the server ends it
    /// (`idle_in_transaction_session_timeout`). It bounds how long a transaction whose client
    /// vanished keeps its row locks, and so how long resolving a lost answer can wait.
    pub idle_in_transaction_timeout: Duration,
    /// Deadline, retries, group commit and `Sharded` settings.
    pub engine: EngineConfig,
}

/// Leaves the URL out: it may carry a password.
impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<not shown>")
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("idle_in_transaction_timeout", &self.idle_in_transaction_timeout)
            .field("engine", &self.engine)
            .finish()
    }
}

impl PgConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            lock_timeout: Duration::from_secs(2),
            statement_timeout: Duration::from_secs(30),
            idle_in_transaction_timeout: Duration::from_secs(10),
            engine: EngineConfig::default(),
        }
    }
}

/// A session timeout in whole milliseconds, never 0 (which PostgreSQL reads as "no limit").
pub(crate) fn millis(duration: Duration) -> u128 {
    duration.as_millis().max(1)
}
