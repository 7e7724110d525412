//! Error kinds. Core owns them; each adapter maps its vendor codes onto these.

use std::time::Duration;

/// Why an input was refused. Always returned before anything is changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidInput {
    /// The SKU id was empty.
    #[error("sku id must not be empty")]
    EmptySku,
    /// The SKU id was longer than allowed.
    #[error("sku id must be at most {max_len} characters")]
    SkuTooLong {
        /// The limit.
        max_len: usize,
    },
    /// The SKU id held a character outside `[A-Za-z0-9._:-]`.
    #[error("sku id may only contain A-Z a-z 0-9 . _ : - (found {found:?})")]
    SkuCharset {
        /// The first offending character.
        found: char,
    },
    /// The quantity was not in 1..=max.
    #[error("quantity must be between 1 and {max} (got {given})")]
    QuantityOutOfRange {
        /// What was given.
        given: i64,
        /// The limit.
        max: u32,
    },
    /// A stock level was not in 0..=max, or a restock would pass the maximum.
    #[error("stock must be between 0 and {max} (got {given})")]
    StockOutOfRange {
        /// What was given (or what the restock would have produced).
        given: i64,
        /// The limit.
        max: i64,
    },
    /// The idempotency key was empty.
    #[error("idempotency key must not be empty")]
    EmptyIdempotencyKey,
    /// The idempotency key was too long.
    #[error("idempotency key must be at most {max_len} characters")]
    IdempotencyKeyTooLong {
        /// The limit.
        max_len: usize,
    },
    /// The idempotency key held a non-printable or non-ASCII character.
    #[error("idempotency key must be printable ASCII without spaces")]
    IdempotencyKeyCharset,
    /// No strategy has this name.
    #[error("unknown strategy {given:?}")]
    UnknownStrategy {
        /// What was given.
        given: String,
    },
    /// This adapter does not implement the strategy.
    #[error("strategy {strategy} is not supported by the {backend} adapter")]
    UnsupportedStrategy {
        /// The strategy asked for.
        strategy: crate::Strategy,
        /// The adapter.
        backend: &'static str,
    },
    /// A `Sharded` bucket count outside 1..=max (an adapter setting).
    #[error("shard bucket count must be between 1 and {max} (got {given})")]
    ShardBucketsOutOfRange {
        /// What was given.
        given: u32,
        /// The limit.
        max: u32,
    },
    /// A ledger page size outside 1..=max.
    #[error("page limit must be between 1 and {max} (got {given})")]
    PageLimitOutOfRange {
        /// What was given.
        given: u32,
        /// The limit.
        max: u32,
    },
}

/// Everything a store operation can fail with. Each variant is a distinct outcome a
/// caller can act on; none of them leaves a partial change behind.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeductError {
    /// The SKU has fewer units than requested. Nothing was changed.
    #[error("insufficient stock: requested {requested}, available {available}")]
    InsufficientStock {
        /// Units requested.
        requested: i64,
        /// Units on hand when the request was refused.
        available: i64,
    },
    /// No SKU has this id.
    #[error("sku not found")]
    NotFound,
    /// `create_sku` for an id that already exists. Nothing was changed.
    #[error("sku already exists")]
    AlreadyExists,
    /// Retries were exhausted (optimistic version misses, deadlocks or serialization
    /// failures) under the [`RetryPolicy`](crate::RetryPolicy). Nothing was changed; safe to retry.
    #[error("gave up after {attempts} conflicting attempts")]
    Conflict {
        /// Attempts made before giving up.
        attempts: u32,
    },
    /// A row lock was not granted within the lock timeout (or at once, for `NoWait`).
    /// Nothing was changed; safe to retry later.
    #[error("lock not granted in time")]
    LockTimeout,
    /// The database could not be reached in time: pool exhausted, connection lost, or a
    /// coalescing queue full. Nothing was changed; safe to retry after `retry_after`.
    #[error("store unavailable: {reason}")]
    Unavailable {
        /// A short, non-sensitive reason.
        reason: &'static str,
        /// A hint for how long to back off.
        retry_after: Duration,
        /// The underlying cause, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The idempotency key was already used for a different request (another SKU, quantity
    /// or operation). Nothing was changed.
    #[error("idempotency key already used for a different request")]
    IdempotencyKeyReused,
    /// The input was refused before anything was changed.
    #[error("invalid input: {0}")]
    InvalidInput(#[from] InvalidInput),
    /// An unexpected failure (a bug, a broken invariant, a schema mismatch). The cause is
    /// kept for logs and must never be shown to end users.
    #[error("internal error: {context}")]
    Internal {
        /// What was being done.
        context: &'static str,
        /// The cause.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
}

impl DeductError {
    /// An internal error with a cause.
    pub fn internal(
        context: &'static str,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DeductError::Internal {
            context,
            source: Some(source.into()),
        }
    }

    /// An unavailable error with a cause.
    pub fn unavailable(
        reason: &'static str,
        retry_after: Duration,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        DeductError::Unavailable {
            reason,
            retry_after,
            source: Some(source.into()),
        }
    }

    /// A stable snake_case name for metrics, reports and problem types.
    pub fn kind(&self) -> &'static str {
        match self {
            DeductError::InsufficientStock { .. } => "insufficient_stock",
            DeductError::NotFound => "not_found",
            DeductError::AlreadyExists => "already_exists",
            DeductError::Conflict { .. } => "conflict",
            DeductError::LockTimeout => "lock_timeout",
            DeductError::Unavailable { .. } => "unavailable",
            DeductError::IdempotencyKeyReused => "idempotency_key_reused",
            DeductError::InvalidInput(_) => "invalid_input",
            DeductError::Internal { .. } => "internal",
        }
    }

    /// True when the same request may succeed if simply sent again later.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DeductError::Conflict { .. } | DeductError::LockTimeout | DeductError::Unavailable { .. }
        )
    }
}

/// Why one attempt inside a retry loop should be repeated rather than reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryCause {
    /// The optimistic version check missed.
    VersionMismatch,
    /// The database broke a deadlock by aborting this transaction.
    Deadlock,
    /// The database refused to serialize this transaction.
    SerializationFailure,
    /// A concurrent writer committed the same idempotency key between our check and insert;
    /// the next attempt finds the committed row and replays it.
    IdempotencyRace,
    /// Another transaction spread the SKU over `Sharded` buckets while this one waited for
    /// the SKU row; the next attempt sees the buckets.
    BucketsChanged,
}

/// The outcome of one attempt: retry it, or report this error.
#[derive(Debug)]
pub enum AttemptError {
    /// Try again (after backoff) if the policy allows.
    Retry(RetryCause),
    /// Give up with this error.
    Fail(DeductError),
}

impl From<DeductError> for AttemptError {
    fn from(error: DeductError) -> Self {
        AttemptError::Fail(error)
    }
}

impl From<InvalidInput> for AttemptError {
    fn from(error: InvalidInput) -> Self {
        AttemptError::Fail(error.into())
    }
}

/// Keeps an error's message when its cause has to be reported to several callers.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SharedCause(String);

impl DeductError {
    /// A copy for one of several callers that share this failure (a failed batch). Causes
    /// are not `Clone`, so they are kept as their message.
    pub fn duplicate(&self) -> DeductError {
        let cause = |source: &Option<Box<dyn std::error::Error + Send + Sync>>| {
            source
                .as_ref()
                .map(|s| Box::new(SharedCause(s.to_string())) as Box<dyn std::error::Error + Send + Sync>)
        };
        match self {
            DeductError::InsufficientStock { requested, available } => DeductError::InsufficientStock {
                requested: *requested,
                available: *available,
            },
            DeductError::NotFound => DeductError::NotFound,
            DeductError::AlreadyExists => DeductError::AlreadyExists,
            DeductError::Conflict { attempts } => DeductError::Conflict { attempts: *attempts },
            DeductError::LockTimeout => DeductError::LockTimeout,
            DeductError::Unavailable {
                reason,
                retry_after,
                source,
            } => DeductError::Unavailable {
                reason,
                retry_after: *retry_after,
                source: cause(source),
            },
            DeductError::IdempotencyKeyReused => DeductError::IdempotencyKeyReused,
            DeductError::InvalidInput(input) => DeductError::InvalidInput(input.clone()),
            DeductError::Internal { context, source } => DeductError::Internal {
                context,
                source: cause(source),
            },
        }
    }
}
