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
    /// The server does not honour a locking clause the strategy relies on (found by the
    /// probe, [`crate::Engine::probe`]), so running it would silently degrade.
    #[error("strategy {strategy} is refused on this {backend} server: {reason}")]
    StrategyNotHonoured {
        /// The strategy asked for.
        strategy: crate::Strategy,
        /// The adapter.
        backend: &'static str,
        /// What the probe found.
        reason: String,
    },
    /// A `Sharded` bucket count outside 1..=max (an adapter setting).
    #[error("shard bucket count must be between 1 and {max} (got {given})")]
    ShardBucketsOutOfRange {
        /// What was given.
        given: u32,
        /// The limit.
        max: u32,
    },
    /// A configured limit outside its allowed range.
    #[error("{setting} must be between {min} and {max} (got {given})")]
    LimitOutOfRange {
        /// The setting's name, unit last.
        setting: &'static str,
        /// What was given.
        given: u64,
        /// The smallest allowed.
        min: u64,
        /// The largest allowed.
        max: u64,
    },
    /// An order id that is empty, too long, or holds a non-printable or non-ASCII character.
    #[error("order id must be 1 to {max_len} printable ASCII characters without spaces")]
    OrderId {
        /// The limit.
        max_len: usize,
    },
    /// A hold id that is empty, too long, or holds a non-printable or non-ASCII character.
    #[error("hold id must be 1 to {max_len} printable ASCII characters without spaces")]
    HoldId {
        /// The limit.
        max_len: usize,
    },
    /// A hold's time to live outside its bounds.
    #[error("ttl_s must be between {min} and {max} seconds (got {given})")]
    HoldTtl {
        /// What was given.
        given: u32,
        /// The shortest allowed.
        min: u32,
        /// The longest allowed.
        max: u32,
    },
    /// A partial confirm names a SKU the hold does not have, or more units than it holds.
    #[error("cannot confirm {given} units of {sku}: the hold has {held}")]
    ConfirmLine {
        /// The SKU.
        sku: String,
        /// Units the confirm asked for.
        given: i64,
        /// Units the hold has of it (0: not in the hold).
        held: i64,
    },
    /// A sweep batch outside its bounds.
    #[error("sweep batch must be between 1 and {max} holds (got {given})")]
    SweepBatch {
        /// What was given.
        given: u32,
        /// The limit.
        max: u32,
    },
    /// An order with no lines, or more than the limit.
    #[error("an order must have between 1 and {max} lines (got {given})")]
    OrderLines {
        /// Lines given.
        given: usize,
        /// The limit.
        max: usize,
    },
    /// A hold asked to be placed by a strategy that only orders have.
    #[error("holds are placed locked or guarded; {strategy} applies to orders only")]
    HoldStrategy {
        /// The strategy asked for.
        strategy: crate::OrderStrategy,
    },
    /// An adjustment of 0 units, or of more than the limit either way.
    #[error("an adjustment must add or remove between 1 and {max} units (got {given})")]
    AdjustmentOutOfRange {
        /// What was given.
        given: i64,
        /// The limit.
        max: u32,
    },
    /// An adjustment whose sign does not fit its kind.
    #[error(
        "a {kind} adjustment cannot have that sign: return and restock add units, damage removes them, recount does either"
    )]
    AdjustmentSign {
        /// The kind.
        kind: &'static str,
    },
    /// A reference that is empty, too long, or holds a non-printable or non-ASCII character.
    #[error("reference must be 1 to {max_len} printable ASCII characters without spaces")]
    Reference {
        /// The limit.
        max_len: usize,
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
    /// An order was refused: these lines asked for more than their SKU had. Every short line
    /// is named. Nothing was changed.
    #[error("insufficient stock on {} line(s)", lines.len())]
    OrderShort {
        /// Each short line, in canonical order.
        lines: Vec<crate::ShortLine>,
    },
    /// An order names SKUs that do not exist. Nothing was changed.
    #[error("{} sku(s) not found", skus.len())]
    SkusNotFound {
        /// Each unknown SKU, in canonical order.
        skus: Vec<crate::SkuId>,
    },
    /// The order id was already used for an order with other lines. Nothing was changed.
    #[error("order id already used for other lines")]
    OrderMismatch {
        /// Where the stored order and this request differ.
        mismatches: Vec<crate::LineMismatch>,
    },
    /// No hold has this id.
    #[error("hold not found")]
    HoldNotFound,
    /// The hold id was already used for a hold with other lines. Nothing was changed.
    #[error("hold id already used for other lines")]
    HoldMismatch {
        /// Where the stored hold and this request differ.
        mismatches: Vec<crate::LineMismatch>,
    },
    /// The hold passed its `expires_at` before it was confirmed (or released): its units are
    /// back in stock, or are reported so until the sweeper writes the expiry. Nothing was
    /// changed.
    #[error("hold expired at {expires_at}")]
    HoldExpired {
        /// When it expired (the database's clock).
        expires_at: chrono::DateTime<chrono::Utc>,
    },
    /// The hold was already resolved another way (released, or confirmed with other units),
    /// and resolves at most once. Nothing was changed.
    #[error("hold already {state}")]
    HoldResolved {
        /// How it was resolved.
        state: crate::HoldState,
    },
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
    /// The database could not be used: pool exhausted, a connection lost before anything
    /// that could commit was sent, too many connections, the deadline passed before a write
    /// was sent, or a coalescing queue full. **Nothing was changed**: this is a definite
    /// refusal, safe to retry after `retry_after` (with the same idempotency key or a new one).
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
    /// The outcome is not known: the connection was lost (or the deadline passed) after a
    /// COMMIT or an autocommit write was sent, and the engine could not resolve it by its
    /// idempotency key within the deadline. The change may or may not have committed; it
    /// committed at most once. Retry with the same `idempotency_key`: the retry replays the
    /// committed receipt or applies the change exactly once. Never a refusal.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown {
        /// What happened, short and non-sensitive.
        reason: &'static str,
        /// The key that resolves it (the client's, or the one the engine generated).
        idempotency_key: Option<crate::IdempotencyKey>,
        /// A hint for how long to wait before retrying with the key.
        retry_after: Duration,
        /// The underlying cause, if any.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A conditional deduction's expected version is no longer the SKU row's version: the
    /// row was written since the client read it. Nothing was changed.
    #[error("version mismatch: expected {expected}, current {current}")]
    VersionMismatch {
        /// The version the request named.
        expected: i64,
        /// The row's version now.
        current: i64,
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
            DeductError::NotFound | DeductError::SkusNotFound { .. } => "not_found",
            DeductError::OrderShort { .. } => "insufficient_stock",
            DeductError::OrderMismatch { .. } => "order_mismatch",
            DeductError::HoldNotFound => "not_found",
            DeductError::HoldMismatch { .. } => "hold_mismatch",
            DeductError::HoldExpired { .. } => "hold_expired",
            DeductError::HoldResolved { .. } => "hold_resolved",
            DeductError::AlreadyExists => "already_exists",
            DeductError::Conflict { .. } => "conflict",
            DeductError::LockTimeout => "lock_timeout",
            DeductError::Unavailable { .. } => "unavailable",
            DeductError::OutcomeUnknown { .. } => "outcome_unknown",
            DeductError::VersionMismatch { .. } => "version_mismatch",
            DeductError::IdempotencyKeyReused => "idempotency_key_reused",
            DeductError::InvalidInput(_) => "invalid_input",
            DeductError::Internal { .. } => "internal",
        }
    }

    /// True when the same request may succeed if simply sent again later (for
    /// `OutcomeUnknown`, only with the same idempotency key).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            DeductError::Conflict { .. }
                | DeductError::LockTimeout
                | DeductError::Unavailable { .. }
                | DeductError::OutcomeUnknown { .. }
        )
    }

    /// True when this answer guarantees that nothing was changed. Every error but
    /// `OutcomeUnknown` does.
    pub fn nothing_changed(&self) -> bool {
        !matches!(self, DeductError::OutcomeUnknown { .. })
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
    /// A conditional write missed, yet a fresh read shows enough stock (restocked, or
    /// buckets were gathered into the row in between): the next attempt may fit.
    StockChanged,
    /// The connection broke before anything that could commit was sent (or the server
    /// ended the session): the next attempt runs on a fresh connection.
    ConnectionLost,
    /// A new connection was refused (too many connections, server starting or stopping).
    ConnectRefused,
    /// An attempt whose answer was lost was resolved by its idempotency key as not
    /// applied; it is safe to run again.
    ResolvedNotApplied,
}

impl RetryCause {
    /// A stable snake_case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RetryCause::VersionMismatch => "version_mismatch",
            RetryCause::Deadlock => "deadlock",
            RetryCause::SerializationFailure => "serialization_failure",
            RetryCause::IdempotencyRace => "idempotency_race",
            RetryCause::BucketsChanged => "buckets_changed",
            RetryCause::StockChanged => "stock_changed",
            RetryCause::ConnectionLost => "connection_lost",
            RetryCause::ConnectRefused => "connect_refused",
            RetryCause::ResolvedNotApplied => "resolved_not_applied",
        }
    }

    /// Every cause, for metrics.
    pub const ALL: [RetryCause; 9] = [
        RetryCause::VersionMismatch,
        RetryCause::Deadlock,
        RetryCause::SerializationFailure,
        RetryCause::IdempotencyRace,
        RetryCause::BucketsChanged,
        RetryCause::StockChanged,
        RetryCause::ConnectionLost,
        RetryCause::ConnectRefused,
        RetryCause::ResolvedNotApplied,
    ];
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
            DeductError::OrderShort { lines } => DeductError::OrderShort { lines: lines.clone() },
            DeductError::SkusNotFound { skus } => DeductError::SkusNotFound { skus: skus.clone() },
            DeductError::OrderMismatch { mismatches } => DeductError::OrderMismatch {
                mismatches: mismatches.clone(),
            },
            DeductError::HoldNotFound => DeductError::HoldNotFound,
            DeductError::HoldMismatch { mismatches } => DeductError::HoldMismatch {
                mismatches: mismatches.clone(),
            },
            DeductError::HoldExpired { expires_at } => DeductError::HoldExpired {
                expires_at: *expires_at,
            },
            DeductError::HoldResolved { state } => DeductError::HoldResolved { state: *state },
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
            DeductError::OutcomeUnknown {
                reason,
                idempotency_key,
                retry_after,
                source,
            } => DeductError::OutcomeUnknown {
                reason,
                idempotency_key: idempotency_key.clone(),
                retry_after: *retry_after,
                source: cause(source),
            },
            DeductError::VersionMismatch { expected, current } => DeductError::VersionMismatch {
                expected: *expected,
                current: *current,
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
