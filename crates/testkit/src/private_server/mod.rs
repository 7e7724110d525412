//! Private PostgreSQL and MariaDB servers (and a MariaDB Galera cluster) for fault tests.
//!
//! Fault tests restart, crash and starve their server; doing that to the machine's shared
//! servers would break every other test running beside them. Each private server lives in
//! its own temp directory (data, socket, log), listens on its own free loopback port and is
//! stopped and deleted on drop.
//!
//! Process control is blocking (`std::process`) because [`Drop`] must use it too; the async
//! methods move it onto tokio's blocking pool so a test's runtime keeps serving its own tasks.
//!
//! When running as root the servers run as the `postgres` / `mysql` OS users (PostgreSQL
//! refuses root); otherwise they run as the current user.

mod galera;
mod mariadb;
mod postgres;
mod process;
mod redis;
mod redis_sentinel;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

pub use galera::{GALERA_NODES_MAX, GALERA_PROVIDER_ENV, PrivateGalera};
pub use mariadb::{MARIADBD_ENV, MariaDbOptions, PrivateMariaDb};
pub use postgres::{PG_BINDIR_ENV, PostgresOptions, PrivatePostgres, postgres_started_at};
pub use process::NO_TEMPLATE_ENV;
pub use redis::{PrivateRedis, PrivateRedisCluster, PrivateRedisNode};
pub use redis_sentinel::{PrivateRedisSentinel, SENTINEL_SERVICE};

/// Upper bound on any one wait for a server or tool: start-up, crash recovery, shutdown.
pub const SERVER_WAIT: Duration = Duration::from_secs(60);

/// How many lines of a server's log a failure message carries.
const LOG_TAIL_LINES: usize = 40;

/// Why a private server could not be started, stopped or restarted.
///
/// Every variant carries the tail of the server's (or the setup tool's) log, because the
/// reason a database refused to start is almost always only written there.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The server programs are not installed (or not found); tests may skip on this one.
    #[error("{0}")]
    NotInstalled(String),
    /// A program could not be started at all, or a file operation failed.
    #[error("{step}: {source}\n{log_tail}")]
    Io {
        /// What was being done.
        step: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
        /// The last lines of the relevant log, already formatted.
        log_tail: String,
    },
    /// A tool or the server exited, or answered, other than expected.
    #[error("{step}: {detail}\n{log_tail}")]
    Failed {
        /// What was being done.
        step: String,
        /// What went wrong.
        detail: String,
        /// The last lines of the relevant log, already formatted.
        log_tail: String,
    },
    /// A bounded wait ran out.
    #[error("{step}: gave up after {waited:?}\n{log_tail}")]
    Timeout {
        /// What was being waited for.
        step: String,
        /// How long it waited.
        waited: Duration,
        /// The last lines of the relevant log, already formatted.
        log_tail: String,
    },
}

/// The last [`LOG_TAIL_LINES`] lines of `path`, framed for an error message.
pub(crate) fn log_tail(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n");
            format!(
                "--- last lines of {} ---\n{tail}\n--- end of log ---",
                path.display()
            )
        }
        Err(error) => format!("--- no log at {} ({error}) ---", path.display()),
    }
}

/// A loopback port nobody listens on right now. The caller binds it soon after and retries
/// once with a new port if someone else was faster.
pub(crate) fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Starts a private server, or returns `None` after a loud message when its programs are not
/// installed and a database is not required (see [`crate::database_required`]). Any other
/// failure panics with the server's log tail: a server that is installed but cannot start is
/// a broken machine, not a reason to skip.
pub(crate) fn started_or_skip<T>(label: &str, started: Result<T, ServerError>) -> Option<T> {
    match started {
        Ok(server) => Some(server),
        Err(ServerError::NotInstalled(reason)) if !crate::database_required() => {
            // Raw stderr so the harness's capture cannot hide it, as for TestDatabase.
            let _ = writeln!(
                std::io::stderr(),
                "\n*** SKIPPED PRIVATE {label} TEST *** {reason}\n"
            );
            None
        }
        Err(error) => panic!("could not start a private {label}: {error}"),
    }
}

/// Runs blocking process control on tokio's blocking pool, so the caller's runtime (often a
/// current-thread test runtime) keeps driving the test's own tasks, such as a proxy, meanwhile.
pub(crate) async fn off_runtime<T, F>(work: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(value) => value,
        Err(join_error) => std::panic::resume_unwind(join_error.into_panic()),
    }
}
