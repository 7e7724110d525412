//! MySQL/MariaDB errors → [`FaultKind`]s. The only place that knows error numbers; what each
//! kind means for an answer is the engine's business.
//!
//! MySQL reports a coarse SQLSTATE (`HY000` for most of these) and a precise error number,
//! so the mapping keys on the number. Both servers share the InnoDB numbers; where they
//! differ (NOWAIT, CHECK violation, statement timeout) both numbers are listed.

use sqlx::mysql::MySqlDatabaseError;
use stockguard_core::engine::{ConnectRefusal, Fault, FaultKind};

/// `ER_DUP_ENTRY`: a unique index refused a row.
pub(crate) const DUPLICATE_ENTRY: u16 = 1062;

/// The unique indexes that claim a key (see the migrations): the ledger's on
/// `idempotency_key`, the order id's and the hold id's.
const IDEMPOTENCY_KEY_INDEXES: [&str; 3] = [
    "inventory_ledger_idempotency_key",
    "inventory_order_idempotency_key",
    "inventory_hold_idempotency_key",
];

/// The error number → fault table.
fn kind_of_number(number: u16, duplicate_key: Option<&str>) -> FaultKind {
    match number {
        // Lock wait timeout (MariaDB also reports NOWAIT with it); MySQL 8's NOWAIT.
        1205 | 3572 => FaultKind::LockTimeout,
        // Deadlock victim, or a Galera certification failure at COMMIT; 3101 is Group
        // Replication's certification failure at COMMIT. Rolled back, every one of them.
        1213 | 3101 => FaultKind::Deadlock,
        DUPLICATE_ENTRY if duplicate_key.is_some_and(|name| IDEMPOTENCY_KEY_INDEXES.contains(&name)) => {
            FaultKind::KeyTaken
        }
        // MariaDB max_statement_time, MySQL max_execution_time, KILL QUERY.
        1969 | 3024 | 1317 => FaultKind::StatementTimeout,
        // CHECK constraint: MariaDB 4025, MySQL 3819.
        4025 | 3819 => FaultKind::CheckViolation,
        // No such table, unknown column.
        1146 | 1054 => FaultKind::SchemaMismatch,
        1049 => FaultKind::ConnectRefused(ConnectRefusal::NoSuchDatabase),
        // Too many connections; max_user_connections; an account's connection limit.
        1040 | 1203 | 1226 => FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections),
        // Galera node not ready.
        1047 => FaultKind::ConnectRefused(ConnectRefusal::NotAccepting),
        // Access denied.
        1044 | 1045 => FaultKind::ConnectRefused(ConnectRefusal::Authentication),
        // Server shutdown in progress, connection killed, disconnected for inactivity,
        // server gone away or lost (client numbers), network read/write errors.
        1053 | 1927 | 4031 | 2006 | 2013 | 1158 | 1159 | 1160 | 1161 | 1152 | 1184 => {
            FaultKind::ConnectionLost
        }
        // The storage engine failed during COMMIT: treat the outcome as open.
        1180 => FaultKind::CompletionUnknown,
        // Disk or table full, out of memory.
        1021 | 1114 | 1037 | 1038 | 1041 => FaultKind::ResourceExhausted,
        _ => FaultKind::Other,
    }
}

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

/// Maps a sqlx error from any statement (public for tests that provoke real errors).
pub fn classify(error: sqlx::Error) -> Fault {
    fault(error, "executing a statement", false)
}

/// Maps a sqlx error. `pool_has_room` tells a pool timeout with connections free to open
/// (the server could not be reached) from a truly exhausted pool.
pub(crate) fn fault(error: sqlx::Error, context: &'static str, pool_has_room: bool) -> Fault {
    let kind = match &error {
        sqlx::Error::Database(_) => match error_number(&error) {
            Some(number) => kind_of_number(number, duplicate_key_name(&error)),
            None => FaultKind::Other,
        },
        other => stockguard_sql::transport_fault_kind(other, pool_has_room),
    };
    Fault::new(kind, context, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_map_to_their_kinds() {
        assert_eq!(kind_of_number(1205, None), FaultKind::LockTimeout);
        assert_eq!(kind_of_number(3572, None), FaultKind::LockTimeout);
        assert_eq!(kind_of_number(1213, None), FaultKind::Deadlock);
        assert_eq!(kind_of_number(3101, None), FaultKind::Deadlock);
        assert_eq!(
            kind_of_number(1062, Some("inventory_ledger_idempotency_key")),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_number(1062, Some("inventory_order_idempotency_key")),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_number(1062, Some("inventory_hold_idempotency_key")),
            FaultKind::KeyTaken
        );
        assert_eq!(kind_of_number(1062, Some("PRIMARY")), FaultKind::Other);
        assert_eq!(kind_of_number(1927, None), FaultKind::ConnectionLost);
        assert_eq!(
            kind_of_number(1040, None),
            FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections)
        );
        assert_eq!(kind_of_number(1146, None), FaultKind::SchemaMismatch);
    }
}
