//! A coalesced batch sent first as one self-contained statement, where the backend has one
//! ([`Backend::write_batch_alone`]): the stock and every ledger row in one autocommit write
//! that applies only if the row covers the whole batch, so the row is held by the server
//! alone, never across a client round trip (what pgbench's batch script does). Used by a
//! SKU's only leader, which takes its batch at once; a pipelined leader takes its batch
//! under the lock instead (taken at once, hot batches halved: docs/benchmarks.md).
//! Anything else (a short or sharded row, a used key, a fault) goes to the locked flow in
//! `batch.rs`, which plans the batch request by request; after a lost answer it looks every
//! key up first, so a batch that did commit is answered from its rows.

use std::time::Instant;

use super::batch::{Lookup, Taken, with_key};
use super::land::Landing;
use super::{Backend, Core, Exposure};
use crate::coalesce::BatchItem;
use crate::domain::{IdempotencyKey, Receipt, SkuId};
use crate::error::{AttemptError, DeductError};

/// What the self-contained attempt leaves to the locked flow.
enum Next {
    Answered(Vec<Result<Receipt, DeductError>>),
    /// Plan it under the lock, with this first lookup.
    Locked(Lookup),
}

impl<B: Backend> Core<B> {
    /// Answers `items` (two or more, taken from the SKU's queue) by the self-contained write,
    /// or by the locked flow where that does not apply them; within `deadline` either way.
    pub(super) async fn batch_alone_first(
        &self,
        sku: &SkuId,
        items: &[BatchItem],
        deadline: Instant,
    ) -> Vec<Result<Receipt, DeductError>> {
        match self.batch_alone(sku, items, deadline).await {
            Next::Answered(results) => results,
            Next::Locked(lookup) => {
                self.run_batch(sku, &|| items, Taken::BeforeLock, lookup, deadline)
                    .await
            }
        }
    }

    async fn batch_alone(&self, sku: &SkuId, items: &[BatchItem], deadline: Instant) -> Next {
        let rows: Vec<(i64, &IdempotencyKey)> = items
            .iter()
            .map(|item| (item.quantity.get(), &item.idempotency_key))
            .collect();
        let keys: Vec<&IdempotencyKey> = rows.iter().map(|(_, key)| *key).collect();
        let exposure = Exposure::default();
        let started = Instant::now();
        // No own ledger ids: they are known only from the answer. A lost answer is resolved
        // by the keys, but a client key found may be an earlier call's, so a resolution
        // answers nothing by itself: the locked flow looks every key up and plans the rest.
        let write = self.backend.write_batch_alone(sku, &rows);
        let landed = tokio::time::timeout_at(
            deadline.into(),
            self.land(&exposure, deadline, sku, &keys, &[], write),
        )
        .await;
        let written = match landed {
            Err(_) => {
                let cut_short = self.past_deadline(&exposure, None);
                return Next::Answered(
                    items
                        .iter()
                        .map(|item| Err(with_key(&cut_short, &item.idempotency_key)))
                        .collect(),
                );
            }
            Ok(Ok(Landing::Answered(Some(written)))) if written.len() == items.len() => written,
            // Never expected; whatever it wrote, the lookup of every key answers it.
            Ok(Ok(Landing::Answered(Some(_)))) => return Next::Locked(Lookup::EveryKey),
            // The row does not cover the batch (or is missing or sharded): nothing written.
            Ok(Ok(Landing::Answered(None))) => return Next::Locked(Lookup::OnRefusal),
            Ok(Ok(Landing::KeyTaken)) => return Next::Locked(Lookup::First),
            Ok(Ok(Landing::Resolved(_))) => return Next::Locked(Lookup::EveryKey),
            Ok(Err(AttemptError::Fail(error @ DeductError::OutcomeUnknown { .. }))) => {
                return Next::Answered(
                    items
                        .iter()
                        .map(|item| Err(with_key(&error, &item.idempotency_key)))
                        .collect(),
                );
            }
            // A definite failure wrote nothing, and a resolution found nothing: the locked
            // flow runs the batch with its own retries (and answers a lasting fault).
            Ok(Err(_)) => return Next::Locked(Lookup::OnRefusal),
        };
        // The row lock was waited for inside the statement.
        let lock_wait_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        Next::Answered(
            items
                .iter()
                .zip(written)
                .map(|(item, (ledger_id, remaining))| {
                    Ok(Receipt {
                        sku: sku.clone(),
                        quantity: item.quantity,
                        remaining,
                        ledger_id,
                        attempts: 1,
                        replayed: false,
                        lock_wait_us,
                        idempotency_key: item.idempotency_key.clone(),
                    })
                })
                .collect(),
        )
    }
}
