//! What a primitive can fail with, in vendor-neutral terms, and what the engine makes of it.
//!
//! Adapters map their vendor codes onto a [`FaultKind`] (that mapping is the only place that
//! knows SQLSTATEs or MySQL error numbers). The engine decides what each kind means, in one
//! place: [`Fault::definite`] for a primitive that cannot have committed, and
//! [`Fault::is_ambiguous`] for one that may have (a COMMIT or an autocommit write was sent).
//! That split is CockroachDB's `40003` rule applied to every database: a connection lost
//! *before* COMMIT means the transaction aborted; lost *during* COMMIT (or during an autocommit
//! statement), the outcome is unknown until the idempotency key is looked up.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::error::{AttemptError, DeductError, RetryCause};

/// A future a primitive returns.
pub trait Step<T>: Future<Output = Result<T, Fault>> + Send {}
impl<T, F: Future<Output = Result<T, Fault>> + Send> Step<T> for F {}

/// How long a caller should back off after a definite `Unavailable`.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why a new connection was refused. All are definite: nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectRefusal {
    /// The server is at its connection limit (PG 53300, MySQL 1040, 1203, 1226).
    TooManyConnections,
    /// The server is starting up or shutting down (PG 57P03, MySQL 1053 at connect).
    NotAccepting,
    /// Nothing listens at the address (TCP connection refused).
    Refused,
    /// The address could not be resolved or reached in time.
    Unreachable,
    /// The server refused the credentials (PG 28xxx, MySQL 1045).
    Authentication,
    /// The TLS handshake failed.
    Tls,
    /// The pool could not open a new connection within its acquire timeout (the server
    /// refused, was full, or did not answer; the pool retried until the timeout).
    OpenTimedOut,
    /// The database (or the SQLite file) does not exist (PG 3D000, MySQL 1049, SQLite
    /// `CANTOPEN`).
    NoSuchDatabase,
}

impl ConnectRefusal {
    /// A short, non-sensitive description.
    pub fn describe(self) -> &'static str {
        match self {
            ConnectRefusal::TooManyConnections => "database has too many connections",
            ConnectRefusal::NotAccepting => "database is starting up or shutting down",
            ConnectRefusal::Refused => "database refused the connection",
            ConnectRefusal::Unreachable => "database host could not be resolved or reached",
            ConnectRefusal::Authentication => "database refused the credentials",
            ConnectRefusal::Tls => "TLS handshake with the database failed",
            ConnectRefusal::NoSuchDatabase => "database does not exist",
            ConnectRefusal::OpenTimedOut => "no new database connection could be opened in time",
        }
    }

    /// True when trying again soon may succeed.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ConnectRefusal::TooManyConnections | ConnectRefusal::NotAccepting | ConnectRefusal::Refused
        )
    }
}

/// A fault, in terms the engine acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FaultKind {
    /// The connection broke while in use: I/O error, reset, closed, or the server ended the
    /// session (PG class 08, 57P01, 57P02, 25P03; MySQL 2006, 2013, 1053, 1927, 4031).
    ConnectionLost,
    /// A new connection could not be opened.
    ConnectRefused(ConnectRefusal),
    /// No pooled connection became free within the acquire timeout.
    PoolTimedOut,
    /// The pool was closed (the store is shutting down).
    PoolClosed,
    /// A row lock was not granted in time, or at once for `NOWAIT` (PG 55P03, MySQL 1205, 3572).
    LockTimeout,
    /// The server broke a deadlock by aborting this transaction (PG 40P01, MySQL 1213).
    Deadlock,
    /// The server could not serialize this transaction (PG 40001, SQLite busy snapshot).
    SerializationFailure,
    /// The idempotency key's unique index refused the ledger row: the key is already used.
    KeyTaken,
    /// The server cancelled the statement at its time bound (PG 57014, MySQL 1969, 3024).
    StatementTimeout,
    /// The server ran out of a resource: disk, memory (PG 53100, 53200; MySQL 1021, 1114).
    ResourceExhausted,
    /// The server itself says a commit's completion is unknown (PG 40003).
    CompletionUnknown,
    /// A CHECK constraint refused a row: a guard in the SQL is broken.
    CheckViolation,
    /// A table or column is missing: the schema does not match (PG 42P01, 42703; MySQL 1146, 1054).
    SchemaMismatch,
    /// The adapter does not implement this primitive.
    Unsupported,
    /// Anything else: a bug.
    Other,
}

/// A failed primitive: its kind, what was being done, and the underlying cause.
pub struct Fault {
    kind: FaultKind,
    context: &'static str,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl fmt::Debug for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fault")
            .field("kind", &self.kind)
            .field("context", &self.context)
            .field("source", &self.source.as_ref().map(ToString::to_string))
            .finish()
    }
}

/// The kind and what was being done; the cause is `source()`, not repeated here.
impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            FaultKind::ConnectionLost => "connection lost",
            FaultKind::ConnectRefused(refusal) => refusal.describe(),
            FaultKind::PoolTimedOut => "connection pool exhausted",
            FaultKind::PoolClosed => "connection pool closed",
            FaultKind::LockTimeout => "lock not granted in time",
            FaultKind::Deadlock => "deadlock",
            FaultKind::SerializationFailure => "serialization failure",
            FaultKind::KeyTaken => "idempotency key already in the ledger",
            FaultKind::StatementTimeout => "statement timed out",
            FaultKind::ResourceExhausted => "database out of resources",
            FaultKind::CompletionUnknown => "commit completion unknown",
            FaultKind::CheckViolation => "check constraint violated",
            FaultKind::SchemaMismatch => "schema mismatch",
            FaultKind::Unsupported => "not supported by this adapter",
            FaultKind::Other => "unexpected error",
        };
        write!(f, "{kind} while {}", self.context)
    }
}

impl StdError for Fault {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

impl Fault {
    /// A fault of `kind` with its cause.
    pub fn new(
        kind: FaultKind,
        context: &'static str,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self {
            kind,
            context,
            source: Some(source.into()),
        }
    }

    /// A fault with no underlying error (a broken expectation found by the adapter itself).
    pub fn bare(kind: FaultKind, context: &'static str) -> Self {
        Self {
            kind,
            context,
            source: None,
        }
    }

    /// What kind of fault.
    pub fn kind(&self) -> FaultKind {
        self.kind
    }

    /// True when, in a primitive that may have committed, this fault leaves the outcome
    /// unknown: the connection went away (or the server said so) after the write was sent.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self.kind,
            FaultKind::ConnectionLost | FaultKind::CompletionUnknown
        )
    }

    /// What the engine does with a fault from a primitive that cannot have committed (or
    /// whose write was resolved as not applied): retry it on a fresh attempt, or refuse
    /// definitely. No transient fault becomes `Internal`.
    pub fn definite(self) -> AttemptError {
        let unavailable = |reason: &'static str, fault: Fault| {
            AttemptError::Fail(DeductError::unavailable(reason, UNAVAILABLE_RETRY_AFTER, fault))
        };
        match self.kind {
            FaultKind::ConnectionLost | FaultKind::CompletionUnknown => {
                AttemptError::Retry(RetryCause::ConnectionLost)
            }
            FaultKind::ConnectRefused(refusal) if refusal.is_transient() => {
                AttemptError::Retry(RetryCause::ConnectRefused)
            }
            FaultKind::ConnectRefused(refusal) => unavailable(refusal.describe(), self),
            FaultKind::PoolTimedOut => unavailable("connection pool exhausted", self),
            FaultKind::PoolClosed => unavailable("store is shutting down", self),
            FaultKind::LockTimeout => AttemptError::Fail(DeductError::LockTimeout),
            FaultKind::Deadlock => AttemptError::Retry(RetryCause::Deadlock),
            FaultKind::SerializationFailure => AttemptError::Retry(RetryCause::SerializationFailure),
            FaultKind::KeyTaken => AttemptError::Retry(RetryCause::IdempotencyRace),
            FaultKind::StatementTimeout => unavailable("statement timed out", self),
            FaultKind::ResourceExhausted => unavailable("database is out of resources", self),
            FaultKind::CheckViolation => AttemptError::Fail(DeductError::internal(
                "check constraint refused a write (a guard is broken)",
                self,
            )),
            FaultKind::SchemaMismatch => AttemptError::Fail(DeductError::internal(
                "the database schema does not match this version (run `stockguard migrate`)",
                self,
            )),
            FaultKind::Unsupported | FaultKind::Other => {
                let context = self.context;
                AttemptError::Fail(DeductError::internal(context, self))
            }
        }
    }

    /// As [`Fault::definite`], for a call outside any retry loop (opening a store, a
    /// readiness ping): a refused connection names its cause.
    pub fn into_error(self) -> DeductError {
        if let FaultKind::ConnectRefused(refusal) = self.kind {
            return DeductError::unavailable(refusal.describe(), UNAVAILABLE_RETRY_AFTER, self);
        }
        match self.definite() {
            AttemptError::Fail(error) => error,
            AttemptError::Retry(cause) => exhausted(cause, 1),
        }
    }
}

/// The answer when retries run out (attempts, elapsed time or the deadline): contention is
/// a `Conflict`; a database that could not be used is `Unavailable`. Both are definite.
pub fn exhausted(cause: RetryCause, attempts: u32) -> DeductError {
    let reason = match cause {
        RetryCause::ConnectRefused => "database refused new connections (too many, or not accepting)",
        RetryCause::ConnectionLost | RetryCause::ResolvedNotApplied => "database connection lost",
        _ => return DeductError::Conflict { attempts },
    };
    DeductError::Unavailable {
        reason,
        retry_after: UNAVAILABLE_RETRY_AFTER,
        source: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_transient_fault_is_internal() {
        for kind in [
            FaultKind::ConnectionLost,
            FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections),
            FaultKind::ConnectRefused(ConnectRefusal::NotAccepting),
            FaultKind::ConnectRefused(ConnectRefusal::Refused),
            FaultKind::PoolTimedOut,
            FaultKind::PoolClosed,
            FaultKind::LockTimeout,
            FaultKind::Deadlock,
            FaultKind::SerializationFailure,
            FaultKind::StatementTimeout,
            FaultKind::ResourceExhausted,
            FaultKind::CompletionUnknown,
        ] {
            let error = Fault::bare(kind, "test").into_error();
            assert!(
                !matches!(error, DeductError::Internal { .. }),
                "{kind:?} became {error:?}"
            );
            assert!(error.is_retryable(), "{kind:?} became {error:?}");
        }
        assert!(matches!(
            Fault::bare(FaultKind::SchemaMismatch, "test").into_error(),
            DeductError::Internal { .. }
        ));
    }

    #[test]
    fn only_a_lost_connection_is_ambiguous() {
        assert!(Fault::bare(FaultKind::ConnectionLost, "t").is_ambiguous());
        assert!(Fault::bare(FaultKind::CompletionUnknown, "t").is_ambiguous());
        for kind in [
            FaultKind::PoolTimedOut,
            FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections),
            FaultKind::Deadlock,
            FaultKind::StatementTimeout,
            FaultKind::KeyTaken,
        ] {
            assert!(!Fault::bare(kind, "t").is_ambiguous(), "{kind:?}");
        }
    }
}
