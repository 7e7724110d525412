//! SQLite result codes → [`FaultKind`]s. The only place that knows SQLite's codes.
//!
//! sqlx reports SQLite's *extended* result code as the error code (e.g. `517`); the primary
//! code is its low byte (`517 & 0xff = 5`, `SQLITE_BUSY`).

use stockguard_core::engine::{ConnectRefusal, Fault, FaultKind};

/// `SQLITE_ERROR`: generic; "no such table" and "no such column" arrive with it.
const SQLITE_ERROR: i64 = 1;
/// `SQLITE_BUSY`: another connection holds the lock we need, and the busy handler gave up
/// (after `busy_timeout`, or at once when it is zero).
const SQLITE_BUSY: i64 = 5;
/// `SQLITE_LOCKED`: a conflict inside one connection or a shared cache.
const SQLITE_LOCKED: i64 = 6;
/// `SQLITE_BUSY_SNAPSHOT`: a read transaction tried to become a write transaction after
/// another connection committed, so its snapshot is stale. Only a fresh transaction can
/// succeed. Every write here starts with `BEGIN IMMEDIATE`, so this is a safety net.
const SQLITE_BUSY_SNAPSHOT: i64 = 517;
/// `SQLITE_READONLY` (e.g. the file or its directory is not writable).
const SQLITE_READONLY: i64 = 8;
/// `SQLITE_IOERR` and its extended codes.
const SQLITE_IOERR: i64 = 10;
/// `SQLITE_FULL`: the disk is full.
const SQLITE_FULL: i64 = 13;
/// `SQLITE_CANTOPEN`: the file does not exist (and may not be created) or cannot be opened.
const SQLITE_CANTOPEN: i64 = 14;
/// `SQLITE_CONSTRAINT_CHECK`.
const SQLITE_CONSTRAINT_CHECK: i64 = 275;
/// `SQLITE_CONSTRAINT_UNIQUE`.
const SQLITE_CONSTRAINT_UNIQUE: i64 = 2067;
/// `SQLITE_CONSTRAINT_PRIMARYKEY`: an order id's claim (the order table's primary key).
const SQLITE_CONSTRAINT_PRIMARYKEY: i64 = 1555;

fn kind_of_code(code: i64, message: &str) -> FaultKind {
    match code {
        SQLITE_BUSY_SNAPSHOT => FaultKind::SerializationFailure,
        // SQLite names the column, not a constraint.
        SQLITE_CONSTRAINT_UNIQUE if message.contains("inventory_ledger.idempotency_key") => {
            FaultKind::KeyTaken
        }
        SQLITE_CONSTRAINT_PRIMARYKEY
            if message.contains("inventory_order.order_id") || message.contains("inventory_hold.hold_id") =>
        {
            FaultKind::KeyTaken
        }
        SQLITE_CONSTRAINT_CHECK => FaultKind::CheckViolation,
        code => match code & 0xff {
            SQLITE_BUSY | SQLITE_LOCKED => FaultKind::LockTimeout,
            // An I/O error during COMMIT may leave the outcome open; the engine resolves it.
            SQLITE_IOERR => FaultKind::CompletionUnknown,
            SQLITE_FULL | SQLITE_READONLY => FaultKind::ResourceExhausted,
            SQLITE_CANTOPEN => FaultKind::ConnectRefused(ConnectRefusal::NoSuchDatabase),
            // SQLite reports a missing table with the generic code; its message is the only
            // thing that tells.
            SQLITE_ERROR if message.starts_with("no such table") || message.starts_with("no such column") => {
                FaultKind::SchemaMismatch
            }
            _ => FaultKind::Other,
        },
    }
}

/// Maps a sqlx error from any statement (public for tests that provoke real errors).
pub fn classify(error: sqlx::Error) -> Fault {
    fault(error, "executing a statement")
}

/// Maps a sqlx error.
pub(crate) fn fault(error: sqlx::Error, context: &'static str) -> Fault {
    let kind = match &error {
        sqlx::Error::Database(db) => match db.code().and_then(|code| code.parse().ok()) {
            Some(code) => kind_of_code(code, db.message()),
            None => FaultKind::Other,
        },
        sqlx::Error::PoolTimedOut => FaultKind::PoolTimedOut,
        sqlx::Error::PoolClosed => FaultKind::PoolClosed,
        sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => FaultKind::ConnectionLost,
        _ => FaultKind::Other,
    };
    Fault::new(kind, context, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_their_kinds() {
        // SQLITE_BUSY_RECOVERY, SQLITE_BUSY_TIMEOUT, SQLITE_LOCKED_SHAREDCACHE.
        assert_eq!(kind_of_code(261, ""), FaultKind::LockTimeout);
        assert_eq!(kind_of_code(773, ""), FaultKind::LockTimeout);
        assert_eq!(kind_of_code(262, ""), FaultKind::LockTimeout);
        assert_eq!(kind_of_code(517, ""), FaultKind::SerializationFailure);
        assert_eq!(
            kind_of_code(2067, "UNIQUE constraint failed: inventory_ledger.idempotency_key"),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_code(1555, "UNIQUE constraint failed: inventory_order.order_id"),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_code(1555, "UNIQUE constraint failed: inventory_hold.hold_id"),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_code(1, "no such table: inventory"),
            FaultKind::SchemaMismatch
        );
        assert_eq!(
            kind_of_code(14, "unable to open database file"),
            FaultKind::ConnectRefused(ConnectRefusal::NoSuchDatabase)
        );
        assert_eq!(
            kind_of_code(10 | (3 << 8), "disk I/O error"),
            FaultKind::CompletionUnknown
        );
    }

    #[test]
    fn pool_errors_keep_their_kind() {
        assert_eq!(
            fault(sqlx::Error::PoolTimedOut, "x").kind(),
            FaultKind::PoolTimedOut
        );
        assert_eq!(fault(sqlx::Error::PoolClosed, "x").kind(), FaultKind::PoolClosed);
    }
}
