//! The flows of single changes: each strategy's deduction, restock and SKU creation,
//! written once over the backend's primitives.

use std::time::{Duration, Instant};

use super::land::Landing;
use super::{AllLocked, Backend, Call, Change, Core, Exposure, Fault, LockWait, Written};
use crate::domain::{
    IdempotencyKey, LedgerEntry, Receipt, RestockReceipt, RestockRequest, STOCK_MAX, SkuId, StockLevel,
    Strategy,
};
use crate::error::{AttemptError, DeductError, InvalidInput, RetryCause};
use crate::model::{replay, replay_restock};
use crate::sharding;

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Call<'_> {
    fn receipt(&self, written: Written, lock_wait: Duration) -> Receipt {
        Receipt {
            sku: self.change.sku.clone(),
            quantity: self.change.quantity,
            remaining: written.stock_after,
            ledger_id: written.ledger_id,
            attempts: 1,
            replayed: false,
            lock_wait_us: micros(lock_wait),
            idempotency_key: self.change.key.clone(),
        }
    }

    /// The receipt of a change whose answer was lost and whose key was then found. The row
    /// must be this very change; a row of another request under the same key means the key
    /// was reused (and this write was refused by the key's unique index).
    ///
    /// `replayed` says whether the row is this call's own:
    /// - a generated key is new, so its row is this call's own;
    /// - a write inside a transaction knows its ledger id before COMMIT (`own_ledger_id`),
    ///   and its resolution found that very row (see `Core::land`): this call's own;
    /// - a single-statement write whose answer was lost never learnt its id, and a client's
    ///   key may have been committed by an earlier call, which the lost answer cannot rule
    ///   out: the receipt is the stored one read back, `replayed: true`.
    fn resolved_receipt(
        &self,
        found: &[LedgerEntry],
        own_ledger_id: Option<i64>,
        lock_wait: Duration,
    ) -> Result<Receipt, AttemptError> {
        let entry = self.entry_of_key(found)?;
        let mut receipt = replay(entry, self.change.sku, self.change.quantity, 1)?;
        receipt.replayed = match own_ledger_id {
            Some(own) => own != entry.id,
            None => self.client_key,
        };
        receipt.lock_wait_us = micros(lock_wait);
        Ok(receipt)
    }

    pub(crate) fn entry_of_key<'e>(&self, found: &'e [LedgerEntry]) -> Result<&'e LedgerEntry, AttemptError> {
        found
            .iter()
            .find(|e| e.idempotency_key.as_deref() == Some(self.change.key.as_str()))
            .ok_or(AttemptError::Retry(RetryCause::IdempotencyRace))
    }

    /// The key to look up before a refusal: only a client's key can have been used before.
    fn prior_key(&self) -> Option<&IdempotencyKey> {
        self.client_key.then_some(self.change.key)
    }
}

impl<B: Backend> Core<B> {
    /// One deduction, by its strategy, under the retry policy (everything but `Coalesced`,
    /// which queues; see `batch.rs`).
    pub(crate) async fn deduct(&self, call: &Call<'_>) -> Result<Receipt, DeductError> {
        let (mut receipt, attempts) = self
            .run(call.deadline, |_| async {
                match call.strategy {
                    Strategy::Pessimistic => self.locked_attempt(call, LockWait::Wait).await,
                    Strategy::NoWait => self.locked_attempt(call, LockWait::NoWait).await,
                    Strategy::Optimistic => self.optimistic_attempt(call).await,
                    Strategy::Sharded => self.sharded_attempt(call).await,
                    // A batch of one, or a coalesced item re-run alone.
                    Strategy::Guarded | Strategy::Coalesced => self.guarded_attempt(call).await,
                }
            })
            .await?;
        receipt.attempts = attempts;
        Ok(receipt)
    }

    /// A conditional deduction: one compare-and-set on the version the client holds. A moved
    /// version is `VersionMismatch` (never retried: the client decides again on fresh data),
    /// unless the client's key was committed before, which replays.
    pub(crate) async fn deduct_if_version(
        &self,
        call: &Call<'_>,
        expected: i64,
    ) -> Result<Receipt, DeductError> {
        let (mut receipt, attempts) = self
            .run(call.deadline, |_| async {
                let current = self
                    .backend
                    .read_versioned(call.change.sku)
                    .await
                    .map_err(Fault::definite)?;
                let requested = call.change.quantity.get();
                let Some(row) = current.filter(|row| row.version == expected && row.stock >= requested)
                else {
                    return self
                        .explain_version_miss(call, expected, current.map(|row| row.version))
                        .await;
                };
                let started = Instant::now();
                let write = self
                    .backend
                    .compare_and_set(call.change, row, row.stock - requested);
                match self.land_change(call, &[], write).await? {
                    Landing::Answered(Some(written)) => Ok(call.receipt(written, started.elapsed())),
                    Landing::Answered(None) => self.explain_version_miss(call, expected, None).await,
                    Landing::Resolved(found) => call.resolved_receipt(&found, None, started.elapsed()),
                    Landing::KeyTaken => self.replay_taken(call).await,
                }
            })
            .await?;
        receipt.attempts = attempts;
        Ok(receipt)
    }

    /// `Guarded`: one conditional write; on a miss, explain it before refusing.
    pub(crate) async fn guarded_attempt(&self, call: &Call<'_>) -> Result<Receipt, AttemptError> {
        let started = Instant::now();
        let write = self.backend.guarded_deduct(call.change);
        let landing = self.land_change(call, &[], write).await?;
        match landing {
            Landing::Answered(Some(written)) => Ok(call.receipt(written, started.elapsed())),
            Landing::Answered(None) => self.explain_miss(call).await,
            Landing::Resolved(found) => call.resolved_receipt(&found, None, started.elapsed()),
            Landing::KeyTaken => self.replay_taken(call).await,
        }
    }

    /// `Pessimistic` and `NoWait`: lock the row, check, write the value computed from the
    /// read, commit.
    async fn locked_attempt(&self, call: &Call<'_>, wait: LockWait) -> Result<Receipt, AttemptError> {
        let started = Instant::now();
        let mut tx = self.backend.begin(wait).await.map_err(Fault::definite)?;
        let locked = match self.backend.lock_row(&mut tx, call.change.sku, wait).await {
            Ok(locked) => locked,
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let lock_wait = started.elapsed();
        let requested = call.change.quantity.get();
        let Some(row) = locked.filter(|row| row.stock >= requested) else {
            self.backend.rollback(tx).await;
            return self.explain_miss(call).await;
        };
        // The new value comes from what was read under the lock: without the lock this is the
        // classic lost update, which the conformance suite catches.
        let row_after = row.stock - requested;
        let written = self
            .backend
            .write_row(&mut tx, call.change, row_after, row.reported(row_after))
            .await;
        let written = match written {
            Ok(written) => written,
            Err(fault) if fault.kind() == super::FaultKind::KeyTaken => {
                self.backend.rollback(tx).await;
                return self.replay_taken(call).await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        match self
            .land_change(call, &[written.ledger_id], self.backend.commit(tx))
            .await?
        {
            Landing::Answered(()) => Ok(call.receipt(written, lock_wait)),
            Landing::Resolved(found) => call.resolved_receipt(&found, Some(written.ledger_id), lock_wait),
            Landing::KeyTaken => self.replay_taken(call).await,
        }
    }

    /// `Optimistic`: read without a lock, then compare-and-set on the version.
    async fn optimistic_attempt(&self, call: &Call<'_>) -> Result<Receipt, AttemptError> {
        // Re-read on every attempt: comparing against a stale version can never succeed.
        let current = self
            .backend
            .read_versioned(call.change.sku)
            .await
            .map_err(Fault::definite)?;
        let requested = call.change.quantity.get();
        let Some(row) = current.filter(|row| row.stock >= requested) else {
            return self.explain_miss(call).await;
        };
        let started = Instant::now();
        let write = self
            .backend
            .compare_and_set(call.change, row, row.stock - requested);
        match self.land_change(call, &[], write).await? {
            Landing::Answered(Some(written)) => Ok(call.receipt(written, started.elapsed())),
            Landing::Answered(None) => Err(AttemptError::Retry(RetryCause::VersionMismatch)),
            Landing::Resolved(found) => call.resolved_receipt(&found, None, started.elapsed()),
            Landing::KeyTaken => self.replay_taken(call).await,
        }
    }

    /// `Sharded`: a free bucket, else the consistent path that locks the SKU and all its
    /// buckets, deducts from the exact total and spreads what is left.
    async fn sharded_attempt(&self, call: &Call<'_>) -> Result<Receipt, AttemptError> {
        let started = Instant::now();
        let write = self
            .backend
            .take_from_bucket(call.change, self.config.spread_eagerly);
        match self.land_change(call, &[], write).await? {
            Landing::Answered(Some(written)) => return Ok(call.receipt(written, started.elapsed())),
            Landing::Answered(None) => {}
            Landing::Resolved(found) => return call.resolved_receipt(&found, None, started.elapsed()),
            Landing::KeyTaken => return self.replay_taken(call).await,
        }
        let started = Instant::now();
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let (row_stock, buckets) = match self.backend.lock_all(&mut tx, call.change.sku).await {
            Ok(AllLocked::Locked { row_stock, buckets }) => (row_stock, buckets),
            Ok(AllLocked::Missing) => {
                self.backend.rollback(tx).await;
                return self.explain_miss(call).await;
            }
            Ok(AllLocked::Changed) => {
                return self
                    .abandon(tx, AttemptError::Retry(RetryCause::BucketsChanged))
                    .await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let lock_wait = started.elapsed();
        let total = row_stock + buckets.iter().map(|(_, stock)| stock).sum::<i64>();
        let requested = call.change.quantity.get();
        if total < requested {
            self.backend.rollback(tx).await;
            return self.explain_miss(call).await;
        }
        let left = total - requested;
        let spread = sharding::respread(
            left,
            self.config.shard_buckets,
            buckets.iter().map(|(bucket, _)| *bucket),
        );
        let written = match self
            .backend
            .write_spread(&mut tx, call.change, &spread, left)
            .await
        {
            Ok(written) => written,
            Err(fault) if fault.kind() == super::FaultKind::KeyTaken => {
                self.backend.rollback(tx).await;
                return self.replay_taken(call).await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        match self
            .land_change(call, &[written.ledger_id], self.backend.commit(tx))
            .await?
        {
            Landing::Answered(()) => Ok(call.receipt(written, lock_wait)),
            Landing::Resolved(found) => call.resolved_receipt(&found, Some(written.ledger_id), lock_wait),
            Landing::KeyTaken => self.replay_taken(call).await,
        }
    }

    /// Why a conditional deduction cannot apply: a replayed key, `NotFound`, the version
    /// moved, or (at the expected version) too little stock.
    async fn explain_version_miss(
        &self,
        call: &Call<'_>,
        expected: i64,
        seen: Option<i64>,
    ) -> Result<Receipt, AttemptError> {
        let current = match seen {
            Some(version) => version,
            None => match self
                .backend
                .read_versioned(call.change.sku)
                .await
                .map_err(Fault::definite)?
            {
                Some(row) => row.version,
                None => return self.explain_miss(call).await,
            },
        };
        if current == expected {
            // The version holds, so the stock is what fell short.
            return self.explain_miss(call).await;
        }
        if let Some(key) = call.prior_key() {
            let found = self.backend.find_keys(&[key]).await.map_err(Fault::definite)?;
            if let Ok(entry) = call.entry_of_key(&found) {
                return Ok(replay(entry, call.change.sku, call.change.quantity, 1)?);
            }
        }
        Err(DeductError::VersionMismatch { expected, current }.into())
    }

    /// Before any refusal: one snapshot read decides between replaying the key, `NotFound`,
    /// `InsufficientStock` (exact: the SKU's total was short at that instant), and running
    /// again (restocked since, or `Sharded` buckets could cover the request once gathered
    /// into the row). So no strategy refuses while the SKU's total would satisfy the request.
    pub(crate) async fn explain_miss(&self, call: &Call<'_>) -> Result<Receipt, AttemptError> {
        let facts = self
            .backend
            .miss_facts(call.change.sku, call.prior_key())
            .await
            .map_err(Fault::definite)?;
        if let Some(prior) = &facts.prior {
            return Ok(replay(prior, call.change.sku, call.change.quantity, 1)?);
        }
        let Some(row_stock) = facts.row_stock else {
            return Err(DeductError::NotFound.into());
        };
        let requested = call.change.quantity.get();
        let total = row_stock + facts.bucket_stock;
        if total < requested {
            if !facts.due_holds
                && let Some(due_holds) = call.due_holds
            {
                // Read in the same snapshot as the shortfall: expiring holds cannot change it.
                due_holds.rule_out();
            }
            return Err(DeductError::InsufficientStock {
                requested,
                available: total,
            }
            .into());
        }
        if facts.bucket_stock > 0 && call.strategy != Strategy::Sharded {
            self.gather(call).await?;
        }
        Err(AttemptError::Retry(RetryCause::StockChanged))
    }

    /// Empties the SKU's buckets into its row under every lock (no ledger row: the total
    /// does not change), so that a row strategy can take the request. Refuses exactly when
    /// the locked total is short.
    async fn gather(&self, call: &Call<'_>) -> Result<(), AttemptError> {
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let (row_stock, buckets) = match self.backend.lock_all(&mut tx, call.change.sku).await {
            Ok(AllLocked::Locked { row_stock, buckets }) => (row_stock, buckets),
            Ok(AllLocked::Missing) => return self.abandon(tx, DeductError::NotFound.into()).await,
            Ok(AllLocked::Changed) => {
                return self
                    .abandon(tx, AttemptError::Retry(RetryCause::BucketsChanged))
                    .await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let bucket_stock: i64 = buckets.iter().map(|(_, stock)| stock).sum();
        let requested = call.change.quantity.get();
        if row_stock + bucket_stock < requested {
            return self
                .abandon(
                    tx,
                    DeductError::InsufficientStock {
                        requested,
                        available: row_stock + bucket_stock,
                    }
                    .into(),
                )
                .await;
        }
        if bucket_stock > 0
            && let Err(fault) = self
                .backend
                .write_gather(&mut tx, call.change.sku, bucket_stock)
                .await
        {
            return self.abandon(tx, fault.definite()).await;
        }
        // A lost answer here changes no total and writes no ledger row: the caller runs
        // again and sees whichever state committed.
        self.backend.commit(tx).await.map_err(Fault::definite)
    }

    /// The key's unique index refused this change's ledger row: answer from the row that
    /// holds the key.
    async fn replay_taken(&self, call: &Call<'_>) -> Result<Receipt, AttemptError> {
        let found = self
            .backend
            .find_keys(&[call.change.key])
            .await
            .map_err(Fault::definite)?;
        let entry = call.entry_of_key(&found)?;
        Ok(replay(entry, call.change.sku, call.change.quantity, 1)?)
    }

    /// [`Core::land`] for the call's change; `own_ledger_ids` as there.
    async fn land_change<T>(
        &self,
        call: &Call<'_>,
        own_ledger_ids: &[i64],
        write: impl Future<Output = Result<T, Fault>>,
    ) -> Result<Landing<T>, AttemptError> {
        self.land(
            call.exposure,
            call.deadline,
            call.change.sku,
            &[call.change.key],
            own_ledger_ids,
            write,
        )
        .await
    }

    /// Rolls back a transaction that will not commit, and passes its error on.
    pub(crate) async fn abandon<T>(&self, tx: B::Tx, error: AttemptError) -> Result<T, AttemptError> {
        self.backend.rollback(tx).await;
        Err(error)
    }

    /// Adds units, written once for every backend, with the same key rules as deductions.
    pub(crate) async fn restock(&self, request: RestockRequest) -> Result<RestockReceipt, DeductError> {
        let client_key = request.idempotency_key.is_some();
        let key = request.idempotency_key.unwrap_or_else(IdempotencyKey::generate);
        let deadline = Instant::now() + self.config.deadline;
        let exposure = Exposure::default();
        let call = Call {
            change: Change {
                sku: &request.sku,
                quantity: request.quantity,
                key: &key,
            },
            strategy: Strategy::Guarded,
            client_key,
            deadline,
            exposure: &exposure,
            due_holds: None,
        };
        let attempts = self.run(deadline, |_| self.restock_attempt(&call));
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(receipt, _)| receipt),
            Err(_) => Err(self.past_deadline(&exposure, Some(&key))),
        };
        self.counted(result)
    }

    async fn restock_attempt(&self, call: &Call<'_>) -> Result<RestockReceipt, AttemptError> {
        let Change { sku, quantity, key } = call.change;
        let written = match self
            .land_change(call, &[], self.backend.restock(call.change))
            .await?
        {
            Landing::Answered(Some(written)) => written,
            Landing::Resolved(found) => {
                // As `resolved_receipt`: read back, so a replay unless the key is this call's.
                let entry = call.entry_of_key(&found)?;
                let mut receipt = replay_restock(entry, sku, quantity)?;
                receipt.replayed = call.client_key;
                return Ok(receipt);
            }
            Landing::KeyTaken => {
                let found = self.backend.find_keys(&[key]).await.map_err(Fault::definite)?;
                return Ok(replay_restock(call.entry_of_key(&found)?, sku, quantity)?);
            }
            Landing::Answered(None) => {
                let facts = self
                    .backend
                    .miss_facts(sku, call.prior_key())
                    .await
                    .map_err(Fault::definite)?;
                if let Some(prior) = &facts.prior {
                    return Ok(replay_restock(prior, sku, quantity)?);
                }
                let Some(row_stock) = facts.row_stock else {
                    return Err(DeductError::NotFound.into());
                };
                let total_after = row_stock + facts.bucket_stock + quantity.get();
                if total_after > STOCK_MAX {
                    return Err(DeductError::from(InvalidInput::StockOutOfRange {
                        given: total_after,
                        max: STOCK_MAX,
                    })
                    .into());
                }
                return Err(AttemptError::Retry(RetryCause::StockChanged));
            }
        };
        Ok(RestockReceipt {
            sku: sku.clone(),
            quantity,
            stock_after: written.stock_after,
            ledger_id: written.ledger_id,
            replayed: false,
            idempotency_key: key.clone(),
        })
    }

    /// Creates a SKU. A lost answer is resolved by reading the SKU back: creation carries
    /// no key, so a SKU found with the requested initial stock counts as created.
    pub(crate) async fn create_sku(
        &self,
        sku: &SkuId,
        initial_stock: i64,
    ) -> Result<StockLevel, DeductError> {
        let deadline = Instant::now() + self.config.deadline;
        let created = StockLevel {
            sku: sku.clone(),
            stock: initial_stock,
            reserved: 0,
            initial_stock,
            version: 0,
        };
        let attempt = |_| async {
            match self.backend.create_sku(sku, initial_stock).await {
                Ok(true) => Ok(created.clone()),
                Ok(false) => Err(DeductError::AlreadyExists.into()),
                Err(fault) if fault.is_ambiguous() => match self.backend.stock(sku).await {
                    Ok(Some(level)) if level.initial_stock == initial_stock => Ok(level),
                    Ok(Some(_)) => Err(DeductError::AlreadyExists.into()),
                    Ok(None) => Err(AttemptError::Retry(RetryCause::ResolvedNotApplied)),
                    Err(_) => Err(AttemptError::Fail(DeductError::OutcomeUnknown {
                        reason: "connection lost while creating the sku; read it back to see whether it exists",
                        idempotency_key: None,
                        retry_after: super::UNAVAILABLE_RETRY_AFTER,
                        source: Some(Box::new(fault)),
                    })),
                },
                Err(fault) => Err(fault.definite()),
            }
        };
        let result = self.run(deadline, attempt).await.map(|(level, _)| level);
        self.counted(result)
    }
}
