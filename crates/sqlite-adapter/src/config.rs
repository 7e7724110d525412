//! Every limit of the SQLite adapter, explicit.

use std::path::PathBuf;
use std::time::Duration;

use stockguard_core::EngineConfig;

/// How the adapter opens its file and what it allows; the engine's settings ride along.
#[derive(Debug, Clone)]
pub struct SqliteConfig {
    /// The database file.
    pub path: PathBuf,
    /// Create the file when it is missing. Tools that must not write (the audit) turn it off,
    /// so that a wrong path is an error rather than a fresh, empty and "clean" database.
    pub create_if_missing: bool,
    /// Most connections in the pool. SQLite admits one writer at a time whatever this is;
    /// more connections only help concurrent reads.
    pub max_connections: u32,
    /// How long a request waits for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// How long a writer waits for the database's write lock (SQLite's busy handler) before
    /// `LockTimeout`. `NoWait` does not wait at all.
    pub busy_timeout: Duration,
    /// Deadline, retries and group commit (SQLite has no `Sharded`).
    pub engine: EngineConfig,
}

impl SqliteConfig {
    /// Defaults for everything but the file path.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            create_if_missing: true,
            // One writer at a time: a few connections serve the concurrent readers, and more
            // would only add writers polling the busy handler for the same lock.
            max_connections: 8,
            acquire_timeout: Duration::from_secs(5),
            busy_timeout: Duration::from_secs(2),
            engine: EngineConfig::default(),
        }
    }
}
