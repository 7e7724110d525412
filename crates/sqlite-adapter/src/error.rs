//! SQLite result codes → core error kinds. The only place that knows SQLite's codes.
//!
//! sqlx reports SQLite's *extended* result code as the error code (e.g. `517`); the primary
//! code is its low byte (`517 & 0xff = 5`, `SQLITE_BUSY`).

use std::time::Duration;

use stockguard_core::{AttemptError, DeductError, RetryCause};

/// How long a caller should back off after the pool ran dry or the file could not be used.
const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `SQLITE_BUSY`: another connection holds the lock we need, and the busy handler gave up
/// (after `busy_timeout`, or at once when it is zero).
const SQLITE_BUSY: i64 = 5;
/// `SQLITE_LOCKED`: a conflict inside one connection or a shared cache.
const SQLITE_LOCKED: i64 = 6;
/// `SQLITE_BUSY_SNAPSHOT`: a read transaction tried to become a write transaction after
/// another connection committed, so its snapshot is stale. The busy handler is *not*
/// consulted (waiting cannot help), so it arrives at once; only a fresh transaction can succeed.
const SQLITE_BUSY_SNAPSHOT: i64 = 517;
/// `SQLITE_READONLY` (e.g. the file or its directory is not writable).
const SQLITE_READONLY: i64 = 8;
/// `SQLITE_IOERR` and its extended codes.
const SQLITE_IOERR: i64 = 10;
/// `SQLITE_FULL`: the disk is full.
const SQLITE_FULL: i64 = 13;
/// `SQLITE_CANTOPEN`.
const SQLITE_CANTOPEN: i64 = 14;
/// `SQLITE_CONSTRAINT_CHECK`.
const SQLITE_CONSTRAINT_CHECK: i64 = 275;
/// `SQLITE_CONSTRAINT_UNIQUE`.
const SQLITE_CONSTRAINT_UNIQUE: i64 = 2067;

fn extended_code(error: &sqlx::Error) -> Option<i64> {
    match error {
        sqlx::Error::Database(db) => db.code().and_then(|code| code.parse().ok()),
        _ => None,
    }
}

/// Maps a sqlx error from inside a deduction attempt.
///
/// - 517 `SQLITE_BUSY_SNAPSHOT` (a deferred read transaction that tried to write after
///   another commit) → retried with a fresh transaction, then `Conflict`. Every write path
///   here starts with `BEGIN IMMEDIATE`, so this is a safety net, not a normal outcome;
/// - 5 `SQLITE_BUSY` and its other extended codes, 6 `SQLITE_LOCKED` and its extended codes
///   → `LockTimeout`: the write lock was not granted within `busy_timeout` (or at once, for
///   `NoWait`);
/// - 2067 UNIQUE on the ledger's idempotency key → retried, and the retry replays the winner;
/// - 275 CHECK violation → `Internal` (the SQL guards make it unreachable: if it fires, a
///   guard is broken, and the database refused the oversell);
/// - pool timeout, closed pool, I/O, full disk, unopenable file → `Unavailable`.
pub fn classify(error: sqlx::Error) -> AttemptError {
    match extended_code(&error) {
        Some(SQLITE_BUSY_SNAPSHOT) => AttemptError::Retry(RetryCause::SerializationFailure),
        Some(SQLITE_CONSTRAINT_UNIQUE) if is_idempotency_key_violation(&error) => {
            AttemptError::Retry(RetryCause::IdempotencyRace)
        }
        _ => AttemptError::Fail(fail(error, "executing a statement")),
    }
}

fn is_idempotency_key_violation(error: &sqlx::Error) -> bool {
    // SQLite names the column, not a constraint: "UNIQUE constraint failed:
    // inventory_ledger.idempotency_key".
    matches!(error, sqlx::Error::Database(db) if db.message().contains("inventory_ledger.idempotency_key"))
}

/// Maps a sqlx error outside a retry loop.
pub(crate) fn fail(error: sqlx::Error, context: &'static str) -> DeductError {
    let primary = extended_code(&error).map(|code| code & 0xff);
    match primary {
        Some(SQLITE_BUSY | SQLITE_LOCKED) => return DeductError::LockTimeout,
        Some(SQLITE_IOERR) => {
            return DeductError::unavailable("database file I/O failed", UNAVAILABLE_RETRY_AFTER, error);
        }
        Some(SQLITE_FULL) => {
            return DeductError::unavailable("database disk is full", UNAVAILABLE_RETRY_AFTER, error);
        }
        Some(SQLITE_CANTOPEN | SQLITE_READONLY) => {
            return DeductError::unavailable(
                "database file cannot be written",
                UNAVAILABLE_RETRY_AFTER,
                error,
            );
        }
        _ => {}
    }
    if extended_code(&error) == Some(SQLITE_CONSTRAINT_CHECK) {
        return DeductError::internal("check constraint refused a write (a guard is broken)", error);
    }
    match error {
        sqlx::Error::PoolTimedOut => {
            DeductError::unavailable("connection pool exhausted", UNAVAILABLE_RETRY_AFTER, error)
        }
        sqlx::Error::PoolClosed => {
            DeductError::unavailable("connection pool closed", UNAVAILABLE_RETRY_AFTER, error)
        }
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
            DeductError::unavailable("database connection lost", UNAVAILABLE_RETRY_AFTER, error)
        }
        other => DeductError::internal(context, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn primary_codes_are_the_low_byte_of_extended_codes() {
        // SQLITE_BUSY_RECOVERY, SQLITE_BUSY_TIMEOUT, SQLITE_LOCKED_SHAREDCACHE.
        assert_eq!(261 & 0xff, SQLITE_BUSY);
        assert_eq!(773 & 0xff, SQLITE_BUSY);
        assert_eq!(262 & 0xff, SQLITE_LOCKED);
        assert_eq!(SQLITE_BUSY_SNAPSHOT & 0xff, SQLITE_BUSY);
    }

    #[test]
    fn pool_errors_are_unavailable() {
        assert!(matches!(
            fail(sqlx::Error::PoolTimedOut, "x"),
            DeductError::Unavailable { .. }
        ));
        assert!(matches!(
            classify(sqlx::Error::PoolClosed),
            AttemptError::Fail(DeductError::Unavailable { .. })
        ));
    }
}
