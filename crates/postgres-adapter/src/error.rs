//! PostgreSQL error codes → core error kinds. The only place that knows SQLSTATEs.

use std::time::Duration;

use stockguard_core::{AttemptError, DeductError, RetryCause};

/// How long a caller should back off after the pool ran dry or a connection dropped.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Maps a sqlx error from inside a deduction attempt.
///
/// - 55P03 `lock_not_available` (lock_timeout or NOWAIT) → `LockTimeout`;
/// - 40P01 deadlock and 40001 serialization failure → retried, then `Conflict`;
/// - 23505 on the ledger's idempotency key → retried, and the retry replays the winner;
/// - 23514 check violation → `Internal` (the SQL guards make it unreachable: if it fires,
///   a guard is broken, and the database refused the oversell);
/// - pool timeout, closed pool, I/O → `Unavailable`.
pub fn classify(error: sqlx::Error) -> AttemptError {
    if let sqlx::Error::Database(db) = &error {
        match db.code().as_deref() {
            Some("55P03") => return AttemptError::Fail(DeductError::LockTimeout),
            Some("40P01") => return AttemptError::Retry(RetryCause::Deadlock),
            Some("40001") => return AttemptError::Retry(RetryCause::SerializationFailure),
            Some("23505") if db.constraint().is_some_and(|c| c.contains("idempotency_key")) => {
                return AttemptError::Retry(RetryCause::IdempotencyRace);
            }
            Some("57014") => {
                return AttemptError::Fail(DeductError::unavailable(
                    "statement timed out",
                    UNAVAILABLE_RETRY_AFTER,
                    error,
                ));
            }
            Some("23514") => {
                return AttemptError::Fail(DeductError::internal(
                    "check constraint refused a write (a guard is broken)",
                    error,
                ));
            }
            _ => {}
        }
    }
    AttemptError::Fail(fail(error, "executing a statement"))
}

/// Maps a sqlx error outside a retry loop.
pub(crate) fn fail(error: sqlx::Error, context: &'static str) -> DeductError {
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
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("55P03") => DeductError::LockTimeout,
        other => DeductError::internal(context, other),
    }
}
