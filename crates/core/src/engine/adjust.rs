//! Adjustments, written once: lock the row, check, write, commit, under the retry policy and
//! the deadline, keyed like every change (a lost answer is resolved by the key).

use std::time::Instant;

use super::land::Landing;
use super::{
    AdjustWrite, AllLocked, Backend, Call, Change, Core, Exposure, Fault, FaultKind, LockWait, LockedRow,
};
use crate::domain::{
    AdjustReceipt, AdjustRequest, IdempotencyKey, LedgerEntry, LedgerReason, Quantity, STOCK_MAX, SkuId,
    Strategy,
};
use crate::error::{AttemptError, DeductError, InvalidInput, RetryCause};

impl<B: Backend> Core<B> {
    /// Applies an adjustment by `deadline`: never below zero, never past `STOCK_MAX`.
    pub(crate) async fn adjust(
        &self,
        request: &AdjustRequest,
        deadline: Instant,
    ) -> Result<AdjustReceipt, DeductError> {
        let client_key = request.idempotency_key.is_some();
        let key = request
            .idempotency_key
            .clone()
            .unwrap_or_else(IdempotencyKey::generate);
        let exposure = Exposure::default();
        // `Call` carries what landing a commit needs: the SKU and the key.
        let units = Quantity::new(request.delta.abs()).map_err(DeductError::from)?;
        let call = Call {
            change: Change {
                sku: &request.sku,
                quantity: units,
                key: &key,
            },
            strategy: Strategy::Pessimistic,
            client_key,
            deadline,
            exposure: &exposure,
            due_holds: None,
        };
        let attempts = self.run(deadline, |_| self.adjust_attempt(request, &call));
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(receipt, _)| receipt),
            Err(_) => Err(self.past_deadline(&exposure, Some(&key))),
        };
        self.counted(result)
    }

    async fn adjust_attempt(
        &self,
        request: &AdjustRequest,
        call: &Call<'_>,
    ) -> Result<AdjustReceipt, AttemptError> {
        let sku = &request.sku;
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let mut row = match self.backend.lock_row(&mut tx, sku, LockWait::Wait).await {
            Ok(Some(row)) => row,
            Ok(None) => {
                return self
                    .refuse_adjustment(tx, request, call, DeductError::NotFound)
                    .await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        if row.stock + request.delta < 0 && row.sharded {
            row = match self.gather_locked(&mut tx, sku).await {
                Ok(row) => row,
                Err(error) => return self.abandon(tx, error).await,
            };
        }
        let total = row.reported(row.stock);
        if row.stock + request.delta < 0 {
            let refusal = DeductError::InsufficientStock {
                requested: -request.delta,
                available: total,
            };
            return self.refuse_adjustment(tx, request, call, refusal).await;
        }
        if total + request.delta > STOCK_MAX {
            let refusal = InvalidInput::StockOutOfRange {
                given: total + request.delta,
                max: STOCK_MAX,
            };
            return self.refuse_adjustment(tx, request, call, refusal.into()).await;
        }
        let row_after = row.stock + request.delta;
        let write = AdjustWrite {
            sku,
            delta: request.delta,
            kind: request.kind,
            reference: request.reference.as_deref(),
            key: call.change.key,
        };
        let written = match self
            .backend
            .write_adjustment(&mut tx, write, row_after, row.reported(row_after))
            .await
        {
            Ok(written) => written,
            Err(fault) if fault.kind() == FaultKind::KeyTaken => {
                self.backend.rollback(tx).await;
                return self.replay_adjustment(request, call, None).await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let landing = self
            .land(
                call.exposure,
                call.deadline,
                sku,
                &[call.change.key],
                &[written.ledger_id],
                self.backend.commit(tx),
            )
            .await?;
        match landing {
            Landing::Answered(()) => Ok(AdjustReceipt {
                sku: sku.clone(),
                delta: request.delta,
                stock_after: written.stock_after,
                ledger_id: written.ledger_id,
                kind: request.kind,
                reference: request.reference.clone(),
                replayed: false,
                idempotency_key: call.change.key.clone(),
            }),
            Landing::Resolved(found) => {
                let mut receipt = self.replay_adjustment(request, call, Some(found)).await?;
                // The resolution found this transaction's own row (by its id): not a replay.
                receipt.replayed = false;
                Ok(receipt)
            }
            Landing::KeyTaken => self.replay_adjustment(request, call, None).await,
        }
    }

    /// Before a refusal, as for deductions: a client's key that was used before answers from
    /// its row (a replay, or `IdempotencyKeyReused`), whatever the stock is now.
    async fn refuse_adjustment(
        &self,
        tx: B::Tx,
        request: &AdjustRequest,
        call: &Call<'_>,
        refusal: DeductError,
    ) -> Result<AdjustReceipt, AttemptError> {
        self.backend.rollback(tx).await;
        if call.client_key {
            let found = self
                .backend
                .find_keys(&[call.change.key])
                .await
                .map_err(Fault::definite)?;
            if !found.is_empty() {
                return self.replay_adjustment(request, call, Some(found)).await;
            }
        }
        Err(refusal.into())
    }

    /// The stored adjustment under the call's key, if it is this very adjustment; another
    /// change under the key is `IdempotencyKeyReused`.
    async fn replay_adjustment(
        &self,
        request: &AdjustRequest,
        call: &Call<'_>,
        found: Option<Vec<LedgerEntry>>,
    ) -> Result<AdjustReceipt, AttemptError> {
        let found = match found {
            Some(found) => found,
            None => self
                .backend
                .find_keys(&[call.change.key])
                .await
                .map_err(Fault::definite)?,
        };
        let entry = call.entry_of_key(&found)?;
        if entry.reason != LedgerReason::Adjust || entry.sku != request.sku || entry.delta != request.delta {
            return Err(DeductError::IdempotencyKeyReused.into());
        }
        Ok(AdjustReceipt {
            sku: entry.sku.clone(),
            delta: entry.delta,
            stock_after: entry.stock_after,
            ledger_id: entry.id,
            kind: entry.adjustment.unwrap_or(request.kind),
            reference: entry.reference.clone(),
            replayed: true,
            idempotency_key: call.change.key.clone(),
        })
    }

    /// With the SKU row locked in `tx`: locks its `Sharded` buckets too (row, then buckets:
    /// the one lock order of a SKU) and moves their units into the row. The row as it is then.
    pub(crate) async fn gather_locked(&self, tx: &mut B::Tx, sku: &SkuId) -> Result<LockedRow, AttemptError> {
        match self.backend.lock_all(tx, sku).await.map_err(Fault::definite)? {
            AllLocked::Locked { row_stock, buckets } => {
                let bucket_stock: i64 = buckets.iter().map(|(_, stock)| stock).sum();
                if bucket_stock > 0 {
                    self.backend
                        .write_gather(tx, sku, bucket_stock)
                        .await
                        .map_err(Fault::definite)?;
                }
                Ok(LockedRow {
                    stock: row_stock + bucket_stock,
                    bucket_offset: 0,
                    sharded: true,
                })
            }
            AllLocked::Missing => Err(DeductError::NotFound.into()),
            AllLocked::Changed => Err(AttemptError::Retry(RetryCause::BucketsChanged)),
        }
    }
}
