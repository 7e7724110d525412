//! Sending something that may commit, and resolving its answer when it is lost.
//!
//! [`Core::land`] wraps every primitive that may commit (a COMMIT, or a self-contained
//! write). A lost connection there is the one ambiguous case of the outcome contract; it is
//! resolved here by the change's key, within the call's deadline:
//! - the key's ledger row exists: the change committed (answered as committed);
//! - it does not, once no transaction holds the SKU's locks: the lost write aborted and can
//!   no longer commit, so the call runs again (`RetryCause::ResolvedNotApplied`);
//! - the lookup cannot be made in time: `OutcomeUnknown`, with the key.

use std::time::{Duration, Instant};

use super::{Backend, Core, Exposure, Fault, FaultKind, Resolution, UNAVAILABLE_RETRY_AFTER};
use crate::domain::{IdempotencyKey, LedgerEntry, SkuId};
use crate::error::{AttemptError, DeductError, RetryCause};

/// How a write that may commit ended, when it did not fail definitely.
#[derive(Debug)]
pub(crate) enum Landing<T> {
    /// The primitive answered.
    Answered(T),
    /// Its answer was lost; the key lookup found these committed rows (at least one).
    Resolved(Vec<LedgerEntry>),
    /// The key's unique index refused the row: the key was committed before.
    KeyTaken,
}

/// Backoff bounds while a resolution waits for the database to come back.
const RESOLVE_BACKOFF_MIN: Duration = Duration::from_millis(20);
const RESOLVE_BACKOFF_MAX: Duration = Duration::from_millis(500);

impl<B: Backend> Core<B> {
    /// Sends `write`, which may commit a change to `sku` carrying `keys`, and classifies its
    /// end. `exposure` records that a write is in flight until this returns a settled answer.
    ///
    /// `own_ledger_ids` are the ledger rows `write` commits, when they are known before it is
    /// sent (a COMMIT after the rows were inserted); empty when not (a single statement). A
    /// lost answer is then resolved by those very rows: a row under one of `keys` with
    /// another id was committed by another call (a client's key sent twice, the first
    /// attempt aborted), so it says nothing about this write. PostgreSQL's identity and
    /// InnoDB's AUTO_INCREMENT never hand out an id twice, even after a rollback. SQLite's
    /// AUTOINCREMENT counter rolls back with its transaction, so there an aborted write's ids
    /// could be handed out again; but SQLite's COMMIT is local, and its only ambiguous answer
    /// is an I/O error (docs/sqlite.md).
    pub(crate) async fn land<T>(
        &self,
        exposure: &Exposure,
        deadline: Instant,
        sku: &SkuId,
        keys: &[&IdempotencyKey],
        own_ledger_ids: &[i64],
        write: impl Future<Output = Result<T, Fault>>,
    ) -> Result<Landing<T>, AttemptError> {
        exposure.sent();
        let answered = write.await;
        #[cfg(feature = "test-utils")]
        let answered = self.lose_answer_if_asked(keys, answered);
        match answered {
            Ok(value) => {
                exposure.settled();
                Ok(Landing::Answered(value))
            }
            Err(fault) if fault.kind() == FaultKind::KeyTaken => {
                exposure.settled();
                Ok(Landing::KeyTaken)
            }
            Err(fault) if fault.is_ambiguous() && !keys.is_empty() => {
                tracing::warn!(%sku, %fault, "answer lost after a write was sent; resolving by key");
                self.resolve(exposure, deadline, sku, keys, own_ledger_ids, fault)
                    .await
            }
            Err(fault) => {
                exposure.settled();
                Err(fault.definite())
            }
        }
    }

    async fn resolve<T>(
        &self,
        exposure: &Exposure,
        deadline: Instant,
        sku: &SkuId,
        keys: &[&IdempotencyKey],
        own_ledger_ids: &[i64],
        lost: Fault,
    ) -> Result<Landing<T>, AttemptError> {
        let unknown_key = keys.first().map(|k| (*k).clone());
        let lookup = || async {
            let mut found = self.backend.settle_and_find(sku, keys).await?;
            if !own_ledger_ids.is_empty() {
                found.retain(|entry| own_ledger_ids.contains(&entry.id));
            }
            Ok((!found.is_empty()).then_some(found))
        };
        let found = self
            .resolve_by(exposure, deadline, unknown_key, lost, lookup)
            .await?;
        Ok(Landing::Resolved(found))
    }

    /// Resolves a lost answer with `lookup`, which waits out the lost transaction's locks
    /// and reads what it committed: `Some` means committed, `None` means it aborted and can
    /// no longer commit (`ResolvedNotApplied`, run again). Retried while the database may
    /// come back within `deadline`; past that the outcome stays unknown, with `unknown_key`.
    pub(crate) async fn resolve_by<R, F, Fut>(
        &self,
        exposure: &Exposure,
        deadline: Instant,
        unknown_key: Option<IdempotencyKey>,
        lost: Fault,
        lookup: F,
    ) -> Result<R, AttemptError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<Option<R>, Fault>>,
    {
        let mut backoff = RESOLVE_BACKOFF_MIN;
        loop {
            match lookup().await {
                Ok(None) => {
                    self.stats.resolved(Resolution::NotApplied);
                    exposure.settled();
                    return Err(AttemptError::Retry(RetryCause::ResolvedNotApplied));
                }
                Ok(Some(found)) => {
                    self.stats.resolved(Resolution::Committed);
                    exposure.settled();
                    return Ok(found);
                }
                Err(fault) if Instant::now() + backoff < deadline && lookup_may_succeed_later(&fault) => {
                    tracing::debug!(%fault, "key lookup failed; trying again");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RESOLVE_BACKOFF_MAX);
                }
                Err(fault) => {
                    tracing::warn!(%fault, "key lookup failed; the outcome stays unknown");
                    self.stats.resolved(Resolution::Unknown);
                    return Err(AttemptError::Fail(DeductError::OutcomeUnknown {
                        reason: "connection lost after the write was sent, and its key could not be looked up in time",
                        idempotency_key: unknown_key,
                        retry_after: UNAVAILABLE_RETRY_AFTER,
                        source: Some(Box::new(lost)),
                    }));
                }
            }
        }
    }

    #[cfg(feature = "test-utils")]
    pub(crate) fn lose_answer_if_asked<T>(
        &self,
        keys: &[&IdempotencyKey],
        answered: Result<T, Fault>,
    ) -> Result<T, Fault> {
        let value = answered?;
        let mut lost = self.lost_answers.lock().expect("lost answers poisoned");
        match lost.iter().position(|key| keys.contains(&key)) {
            Some(index) => {
                lost.swap_remove(index);
                Err(Fault::bare(
                    FaultKind::ConnectionLost,
                    "test: answer lost after the write",
                ))
            }
            None => Ok(value),
        }
    }
}

/// Faults worth waiting out during a resolution: the database restarting, the pool
/// refilling, or the lost transaction still holding its locks.
fn lookup_may_succeed_later(fault: &Fault) -> bool {
    matches!(
        fault.kind(),
        FaultKind::ConnectionLost
            | FaultKind::ConnectRefused(_)
            | FaultKind::PoolTimedOut
            | FaultKind::LockTimeout
            | FaultKind::Deadlock
            | FaultKind::SerializationFailure
            | FaultKind::StatementTimeout
    )
}
