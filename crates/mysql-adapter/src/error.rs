//! MySQL/MariaDB error numbers → core error kinds. The only place that knows error numbers.
//!
//! MySQL reports a coarse SQLSTATE (`HY000` for most of these) and a precise error number,
//! so the mapping keys on the number. Both servers share the InnoDB numbers; where they
//! differ (NOWAIT, CHECK violation, statement timeout) both numbers are listed.

use std::time::Duration;

use sqlx::mysql::MySqlDatabaseError;
use stockguard_core::{AttemptError, DeductError, RetryCause};

/// How long a caller should back off after the pool ran dry or a connection dropped.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `ER_DUP_ENTRY`: a unique index refused a row.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;
/// `ER_LOCK_WAIT_TIMEOUT`: `innodb_lock_wait_timeout` ran out. InnoDB rolls back only the
/// statement (unless `innodb_rollback_on_timeout`), so the caller must roll back the
/// transaction itself. MariaDB also reports `FOR UPDATE NOWAIT` with this number.
const LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_DEADLOCK`: InnoDB chose this transaction as the deadlock victim and rolled it back.
const DEADLOCK: u16 = 1213;
/// `ER_LOCK_NOWAIT` (MySQL 8): `FOR UPDATE NOWAIT` found the row locked.
const LOCK_NOWAIT: u16 = 3572;
/// `ER_CONSTRAINT_FAILED` (MariaDB): a CHECK constraint refused a row.
const CHECK_VIOLATION_MARIADB: u16 = 4025;
/// `ER_CHECK_CONSTRAINT_VIOLATED` (MySQL 8.0.16+): a CHECK constraint refused a row.
const CHECK_VIOLATION_MYSQL: u16 = 3819;
/// `ER_STATEMENT_TIMEOUT` (MariaDB `max_statement_time`).
const STATEMENT_TIMEOUT_MARIADB: u16 = 1969;
/// `ER_QUERY_TIMEOUT` (MySQL `max_execution_time`).
const STATEMENT_TIMEOUT_MYSQL: u16 = 3024;

/// The name of the ledger's unique index on `idempotency_key` (see the migration).
const IDEMPOTENCY_KEY_INDEX: &str = "inventory_ledger_idempotency_key";

/// The server's error number, if this is an error the server sent.
pub(crate) fn error_number(error: &sqlx::Error) -> Option<u16> {
    match error {
        sqlx::Error::Database(db) => db
            .try_downcast_ref::<MySqlDatabaseError>()
            .map(MySqlDatabaseError::number),
        _ => None,
    }
}

/// The index a 1062 names. The message ends with `for key 'NAME'` (MariaDB) or
/// `for key 'table.NAME'` (MySQL 8.0.19+); the duplicate value comes before it and may
/// itself contain quotes, so the last `for key '` is the one that counts.
pub(crate) fn duplicate_key_name(error: &sqlx::Error) -> Option<&str> {
    let sqlx::Error::Database(db) = error else {
        return None;
    };
    let (_, tail) = db.message().rsplit_once("for key '")?;
    let name = tail.strip_suffix('\'')?;
    Some(name.rsplit_once('.').map_or(name, |(_, index)| index))
}

/// Maps a sqlx error from inside a deduction attempt.
///
/// - 1205 lock wait timeout and 3572 NOWAIT → `LockTimeout` (the attempt rolls back);
/// - 1213 deadlock → retried, then `Conflict`;
/// - 1062 on the ledger's idempotency key → retried, and the retry replays the winner;
/// - 4025 / 3819 CHECK violation → `Internal` (the SQL guards make it unreachable: if it
///   fires, a guard is broken, and the database refused the oversell);
/// - 1969 / 3024 statement timeout, pool timeout, closed pool, I/O → `Unavailable`.
pub fn classify(error: sqlx::Error) -> AttemptError {
    match error_number(&error) {
        Some(LOCK_WAIT_TIMEOUT | LOCK_NOWAIT) => AttemptError::Fail(DeductError::LockTimeout),
        Some(DEADLOCK) => AttemptError::Retry(RetryCause::Deadlock),
        Some(DUPLICATE_ENTRY) if duplicate_key_name(&error) == Some(IDEMPOTENCY_KEY_INDEX) => {
            AttemptError::Retry(RetryCause::IdempotencyRace)
        }
        Some(STATEMENT_TIMEOUT_MARIADB | STATEMENT_TIMEOUT_MYSQL) => AttemptError::Fail(
            DeductError::unavailable("statement timed out", UNAVAILABLE_RETRY_AFTER, error),
        ),
        Some(CHECK_VIOLATION_MARIADB | CHECK_VIOLATION_MYSQL) => AttemptError::Fail(DeductError::internal(
            "check constraint refused a write (a guard is broken)",
            error,
        )),
        _ => AttemptError::Fail(fail(error, "executing a statement")),
    }
}

/// Maps a sqlx error outside a retry loop.
pub(crate) fn fail(error: sqlx::Error, context: &'static str) -> DeductError {
    if matches!(error_number(&error), Some(LOCK_WAIT_TIMEOUT | LOCK_NOWAIT)) {
        return DeductError::LockTimeout;
    }
    match error {
        sqlx::Error::PoolTimedOut => {
            DeductError::unavailable("connection pool exhausted", UNAVAILABLE_RETRY_AFTER, error)
        }
        sqlx::Error::PoolClosed => {
            DeductError::unavailable("connection pool closed", UNAVAILABLE_RETRY_AFTER, error)
        }
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            DeductError::unavailable("database connection lost", UNAVAILABLE_RETRY_AFTER, error)
        }
        other => DeductError::internal(context, other),
    }
}
