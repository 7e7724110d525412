//! The `Coalesced` batch, written once: lock the SKU row, take the queued requests, plan them
//! FIFO against its stock ([`BatchPlan`]), write the stock and one ledger row per applied
//! request, commit. The requests are taken only once the row lock is granted, so those that
//! arrive while the previous batch of the SKU commits still join this one. A lone request on
//! an idle SKU takes the single `Guarded` write instead (one round trip). Client keys are
//! written without a lookup first; the ledger's unique index catches a used one.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::land::Landing;
use super::{Backend, Call, Change, Core, Exposure, Fault, LockWait, LockedRow};
use crate::coalesce::{BatchExecutor, BatchItem, BatchPlan, BatchSource};
use crate::domain::{IdempotencyKey, Receipt, SkuId, Strategy};
use crate::error::{AttemptError, DeductError, RetryCause};

/// The coalescer's executor: the engine's batch flow.
pub(crate) struct BatchRunner<B>(pub(crate) Arc<Core<B>>);

impl<B: Backend> BatchExecutor for BatchRunner<B> {
    type Item = BatchItem;
    type Receipt = Receipt;

    async fn execute_batch(&self, sku: &SkuId, items: &[BatchItem]) -> Vec<Result<Receipt, DeductError>> {
        self.0.execute_batch(sku, items).await
    }

    async fn execute_taking(
        &self,
        sku: &SkuId,
        source: &BatchSource<'_, Self>,
    ) -> Vec<Result<Receipt, DeductError>> {
        if source.sole_leader() {
            // No batch of the SKU commits ahead of this one: take it now, so a lone request
            // takes the guarded write and client keys are looked up before the lock.
            return self.0.execute_batch(sku, source.take()).await;
        }
        // A batch behind a committing one is taken only once the row lock is granted, even
        // where a batch can be sent alone: taken at once it would be smaller (measured).
        let deadline = Instant::now() + self.0.config.deadline;
        self.0
            .run_batch(
                sku,
                &|| source.take(),
                Taken::UnderLock,
                Lookup::OnRefusal,
                deadline,
            )
            .await
    }

    fn add_queue_wait(receipt: &mut Receipt, queued_us: u64) {
        receipt.lock_wait_us += queued_us;
    }
}

/// What one batch attempt produced.
struct Applied {
    results: Vec<Result<Receipt, DeductError>>,
    /// The SKU holds (or held) `Sharded` bucket stock, so a refusal planned against the row
    /// alone is not final.
    sharded: bool,
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl<B: Backend> Core<B> {
    async fn execute_batch(&self, sku: &SkuId, items: &[BatchItem]) -> Vec<Result<Receipt, DeductError>> {
        if let [item] = items {
            // An uncontended SKU: the single guarded write gives the same result in one round
            // trip instead of four, which keeps coalescing cheap at low conflict.
            let deadline = Instant::now() + self.config.deadline;
            return vec![self.alone(sku, item, deadline).await];
        }
        let deadline = Instant::now() + self.config.deadline;
        if self.backend.writes_batch_alone() {
            return self.batch_alone_first(sku, items, deadline).await;
        }
        self.run_batch(sku, &|| items, Taken::BeforeLock, Lookup::OnRefusal, deadline)
            .await
    }

    /// The locked batch flow over the requests `take` yields once the row lock is granted
    /// (the same ones on every call). A failure before then takes them too and answers each.
    /// `first` is the first attempt's lookup; later attempts look client keys up first.
    pub(super) async fn run_batch<'s>(
        &self,
        sku: &SkuId,
        take: &(dyn Fn() -> &'s [BatchItem] + Sync),
        taken: Taken,
        first: Lookup,
        deadline: Instant,
    ) -> Vec<Result<Receipt, DeductError>> {
        let exposure = Exposure::default();
        // The first attempt writes client keys without looking them up: a retry of a key this
        // engine committed was answered from memory before it queued, and any other used key
        // is refused by the ledger's unique index, which runs the batch again (with lookups).
        let attempts = self.run(deadline, |attempt| {
            let lookup = match (attempt, first) {
                (1, first) | (_, first @ Lookup::EveryKey) => first,
                _ => Lookup::First,
            };
            self.batch_attempt(sku, take, taken, lookup, &exposure, deadline)
        });
        let outcome = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(outcome) => outcome,
            Err(_) => {
                let cut_short = self.past_deadline(&exposure, None);
                return take()
                    .iter()
                    .map(|item| Err(with_key(&cut_short, &item.idempotency_key)))
                    .collect();
            }
        };
        let items = take();
        let (applied, attempts) = match outcome {
            Ok(applied) => applied,
            Err(error) => {
                return items
                    .iter()
                    .map(|item| Err(with_key(&error, &item.idempotency_key)))
                    .collect();
            }
        };
        let mut results = Vec::with_capacity(items.len());
        for (item, result) in items.iter().zip(applied.results) {
            let result = match result {
                Ok(mut receipt) => {
                    receipt.attempts = attempts;
                    Ok(receipt)
                }
                // Planned against the row alone: buckets may still cover it. Run it alone,
                // through the refusal path that gathers them.
                Err(DeductError::InsufficientStock { .. }) if applied.sharded => {
                    self.alone(sku, item, deadline).await
                }
                Err(error) => Err(error),
            };
            results.push(result);
        }
        results
    }

    /// One item run as a single `Guarded` deduction, with the batch's deadline.
    async fn alone(&self, sku: &SkuId, item: &BatchItem, deadline: Instant) -> Result<Receipt, DeductError> {
        let exposure = Exposure::default();
        let call = Call {
            change: Change {
                sku,
                quantity: item.quantity,
                key: &item.idempotency_key,
            },
            strategy: Strategy::Coalesced,
            client_key: item.client_key,
            deadline,
            exposure: &exposure,
            due_holds: None,
        };
        match tokio::time::timeout_at(deadline.into(), self.deduct(&call)).await {
            Ok(result) => result,
            Err(_) => Err(self.past_deadline(&exposure, Some(&item.idempotency_key))),
        }
    }

    async fn batch_attempt<'s>(
        &self,
        sku: &SkuId,
        take: &(dyn Fn() -> &'s [BatchItem] + Sync),
        taken: Taken,
        lookup: Lookup,
        exposure: &Exposure,
        deadline: Instant,
    ) -> Result<Applied, AttemptError> {
        // Only a client's key can be in the ledger already; generated keys are new. The
        // first attempt holds the hot row for three round trips (lock, write, commit): its
        // keys are written blind. A used one is refused by its unique index at the write, and
        // the attempt runs again (`IdempotencyRace`) with a lookup, before the lock when the
        // batch is known then. A key committed after that lookup is caught the same way.
        let looked_up = match (lookup, taken) {
            (Lookup::First | Lookup::EveryKey, Taken::BeforeLock) => {
                Some(self.key_priors(take(), lookup).await.map_err(Fault::definite)?)
            }
            _ => None,
        };
        let started = Instant::now();
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let locked: Option<LockedRow> = match self.backend.lock_row(&mut tx, sku, LockWait::Wait).await {
            Ok(locked) => locked,
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let lock_wait_us = micros(started.elapsed());
        let items = take();
        if items.is_empty() {
            // Another leader of the SKU took every request while this one waited.
            self.backend.rollback(tx).await;
            return Ok(Applied {
                results: Vec::new(),
                sharded: false,
            });
        }
        // A batch taken under the lock is known only now: when it needs a lookup (a retried
        // attempt, or a plan that would refuse a client-keyed request), that runs here, on
        // another connection (committed rows are what it looks for), with the row held.
        let stock = locked.map(|row| row.stock);
        let mut plan = match (lookup, looked_up) {
            (_, Some(prior)) => BatchPlan::new(sku, stock, items, &prior),
            (Lookup::First | Lookup::EveryKey, None) => match self.key_priors(items, lookup).await {
                Ok(prior) => BatchPlan::new(sku, stock, items, &prior),
                Err(fault) => return self.abandon(tx, fault.definite()).await,
            },
            (Lookup::OnRefusal, None) => {
                let blind = BatchPlan::new(sku, stock, items, &[]);
                if blind.refuses_client_key(items) {
                    // A refusal is final, and a client's key may have committed before.
                    match self.key_priors(items, Lookup::First).await {
                        Ok(prior) => BatchPlan::new(sku, stock, items, &prior),
                        Err(fault) => return self.abandon(tx, fault.definite()).await,
                    }
                } else {
                    blind
                }
            }
        };
        let sharded = locked.is_some_and(|row| row.sharded);
        if let Some(row) = locked
            && row.bucket_offset != 0
        {
            plan.report_total_stock(row.bucket_offset);
        }
        if plan.new_rows.is_empty() {
            // Refusals and replays only: nothing to commit.
            self.backend.rollback(tx).await;
            return Ok(Applied {
                results: plan.into_results(sku, items, &[], lock_wait_us),
                sharded,
            });
        }
        let ids = match self.backend.write_batch(&mut tx, sku, &plan).await {
            Ok(ids) => ids,
            // A concurrent request committed one of the client keys since the lookup.
            Err(fault) if fault.kind() == super::FaultKind::KeyTaken => {
                return self
                    .abandon(tx, AttemptError::Retry(RetryCause::IdempotencyRace))
                    .await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        if ids.len() != plan.new_rows.len() {
            let error = DeductError::Internal {
                context: "a batch wrote a different number of ledger rows than planned",
                source: None,
            };
            return self.abandon(tx, error.into()).await;
        }
        let keys = plan.new_keys();
        let ids = match self
            .land(exposure, deadline, sku, &keys, &ids, self.backend.commit(tx))
            .await?
        {
            Landing::Answered(()) => ids,
            // The batch is one transaction: it committed whole if any of its rows exists.
            Landing::Resolved(found) => {
                let by_key = |key: &IdempotencyKey| {
                    found
                        .iter()
                        .find(|entry| entry.idempotency_key.as_deref() == Some(key.as_str()))
                        .map(|entry| entry.id)
                };
                let resolved: Option<Vec<i64>> = keys.iter().map(|key| by_key(key)).collect();
                resolved.ok_or(DeductError::Internal {
                    context: "after a lost COMMIT only part of a batch was found",
                    source: None,
                })?
            }
            Landing::KeyTaken => return Err(AttemptError::Retry(RetryCause::IdempotencyRace)),
        };
        Ok(Applied {
            results: plan.into_results(sku, items, &ids, lock_wait_us),
            sharded,
        })
    }
}

/// When a batch attempt looks its keys up in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lookup {
    /// Client keys, before planning (before the lock when the batch is known then): a
    /// retried attempt, which may follow a key refused by the ledger's unique index.
    First,
    /// Client keys, only if the plan would refuse a client-keyed request: the first attempt,
    /// which writes keys blind and lets the unique index catch a used one.
    OnRefusal,
    /// Every key, generated ones too, before planning, on every attempt: after a lost answer
    /// of a self-contained batch, whose rows may all be in the ledger.
    EveryKey,
}

/// When a batch's requests were taken from the queue.
#[derive(Debug, Clone, Copy)]
pub(super) enum Taken {
    /// Before its transaction began: the sole leader of the SKU.
    BeforeLock,
    /// Once the row lock was granted: another batch of the SKU was committing ahead of it.
    UnderLock,
}

impl<B: Backend> Core<B> {
    /// The ledger entries already written under the batch's client keys (every key with
    /// `Lookup::EveryKey`; none without any).
    async fn key_priors(
        &self,
        items: &[BatchItem],
        lookup: Lookup,
    ) -> Result<Vec<super::LedgerEntry>, Fault> {
        let keys: Vec<&IdempotencyKey> = items
            .iter()
            .filter(|item| item.client_key || lookup == Lookup::EveryKey)
            .map(|item| &item.idempotency_key)
            .collect();
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.backend.find_keys(&keys).await
    }
}

/// A whole-batch failure as one item's answer: an unknown outcome names the item's own key.
pub(crate) fn with_key(error: &DeductError, key: &IdempotencyKey) -> DeductError {
    match error {
        DeductError::OutcomeUnknown {
            reason, retry_after, ..
        } => DeductError::OutcomeUnknown {
            reason,
            idempotency_key: Some(key.clone()),
            retry_after: *retry_after,
            source: None,
        },
        other => other.duplicate(),
    }
}
