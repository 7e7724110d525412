//! PostgreSQL errors → [`FaultKind`]s. The only place that knows SQLSTATEs; what each kind
//! means for an answer is the engine's business.

use stockguard_core::engine::{ConnectRefusal, Fault, FaultKind};

/// The SQLSTATE → fault table. Classes 08 (connection exception) and 53 (insufficient
/// resources) are matched by class; the rest by code.
fn kind_of_sqlstate(code: &str, constraint: Option<&str>) -> FaultKind {
    match code {
        "55P03" => FaultKind::LockTimeout,
        "40P01" => FaultKind::Deadlock,
        "40001" => FaultKind::SerializationFailure,
        "40003" => FaultKind::CompletionUnknown,
        "23505" if constraint.is_some_and(|c| c.contains("idempotency_key")) => FaultKind::KeyTaken,
        "57014" => FaultKind::StatementTimeout,
        "23514" => FaultKind::CheckViolation,
        "42P01" | "42703" | "42883" | "3F000" => FaultKind::SchemaMismatch,
        "3D000" => FaultKind::ConnectRefused(ConnectRefusal::NoSuchDatabase),
        "53300" => FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections),
        "57P03" => FaultKind::ConnectRefused(ConnectRefusal::NotAccepting),
        // admin_shutdown (pg_terminate_backend, smart/fast shutdown), crash_shutdown, and
        // idle_in_transaction_session_timeout: the server ended the session.
        "57P01" | "57P02" | "25P03" => FaultKind::ConnectionLost,
        code if code.starts_with("28") => FaultKind::ConnectRefused(ConnectRefusal::Authentication),
        code if code.starts_with("08") => FaultKind::ConnectionLost,
        code if code.starts_with("53") || code.starts_with("58") => FaultKind::ResourceExhausted,
        _ => FaultKind::Other,
    }
}

/// Maps a sqlx error from any statement (public for tests that provoke real errors).
pub fn classify(error: sqlx::Error) -> Fault {
    fault(error, "executing a statement", false)
}

/// Maps a sqlx error. `pool_has_room` tells a pool timeout with connections free to open
/// (the server could not be reached) from a truly exhausted pool.
pub(crate) fn fault(error: sqlx::Error, context: &'static str, pool_has_room: bool) -> Fault {
    let kind = match &error {
        sqlx::Error::Database(db) => kind_of_sqlstate(db.code().as_deref().unwrap_or(""), db.constraint()),
        other => stockguard_sql::transport_fault_kind(other, pool_has_room),
    };
    Fault::new(kind, context, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlstates_map_to_their_kinds() {
        assert_eq!(kind_of_sqlstate("55P03", None), FaultKind::LockTimeout);
        assert_eq!(
            kind_of_sqlstate("23505", Some("inventory_ledger_idempotency_key_key")),
            FaultKind::KeyTaken
        );
        assert_eq!(
            kind_of_sqlstate("23505", Some("inventory_pkey")),
            FaultKind::Other
        );
        assert_eq!(kind_of_sqlstate("08006", None), FaultKind::ConnectionLost);
        assert_eq!(kind_of_sqlstate("57P01", None), FaultKind::ConnectionLost);
        assert_eq!(
            kind_of_sqlstate("53300", None),
            FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections)
        );
        assert_eq!(kind_of_sqlstate("53100", None), FaultKind::ResourceExhausted);
        assert_eq!(kind_of_sqlstate("42P01", None), FaultKind::SchemaMismatch);
        assert_eq!(
            kind_of_sqlstate("28P01", None),
            FaultKind::ConnectRefused(ConnectRefusal::Authentication)
        );
    }
}
