//! Multi-line orders, written once over the backend's primitives: all lines apply or none
//! do, in one transaction.
//!
//! - The order id is the idempotency key: the transaction claims it first (a unique row), so
//!   a replay, or a concurrent call with the same id, finds the committed order and answers
//!   with its receipt; the same id with other lines is `OrderMismatch`.
//! - Lines are locked and written in canonical SKU order (see [`OrderRequest`]), so two
//!   orders over the same SKUs never wait for each other in a cycle. A deadlock the database
//!   reports anyway is retried inside the deadline (counted under `deadlock`).
//! - A refusal is exact: it is decided under every line's lock, and names every short line
//!   with what it had.
//! - A lost COMMIT is resolved like a deduction's: wait out the lines' row locks, then look
//!   the order up (see `land.rs`).

use std::time::Instant;

use super::{Backend, Core, Exposure, Fault, FaultKind, LineWrite, LockWait, LockedRow, StoredOrder};
use crate::domain::{
    IdempotencyKey, OrderLineReceipt, OrderReceipt, OrderRequest, OrderStrategy, ShortLine, line_mismatches,
};
use crate::error::{AttemptError, DeductError, RetryCause};

/// One order in flight.
struct OrderCall<'a> {
    order: &'a OrderRequest,
    /// The order id as a key, for `OutcomeUnknown` answers and test hooks.
    key: IdempotencyKey,
    deadline: Instant,
    exposure: &'a Exposure,
}

/// After claiming the order id: a transaction to go on with, or the committed order.
enum Claimed<Tx> {
    Open(Tx),
    Replayed(OrderReceipt),
}

impl<B: Backend> Core<B> {
    /// Places an order under the retry policy and the deadline.
    pub(crate) async fn place_order(&self, order: &OrderRequest) -> Result<OrderReceipt, DeductError> {
        let key = order.order_id().idempotency_key();
        let deadline = Instant::now() + self.config.deadline;
        let exposure = Exposure::default();
        let call = OrderCall {
            order,
            key,
            deadline,
            exposure: &exposure,
        };
        let attempts = self.run(deadline, |_| async {
            match order.strategy() {
                OrderStrategy::Locked => self.locked_order(&call).await,
                OrderStrategy::Guarded => self.guarded_order(&call).await,
            }
        });
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(mut receipt, attempts)| {
                receipt.attempts = attempts;
                receipt
            }),
            Err(_) => Err(self.past_deadline(&exposure, Some(&call.key))),
        };
        self.counted(result)
    }

    /// Locks every line's row, checks them all against what the locks read, writes, commits.
    async fn locked_order(&self, call: &OrderCall<'_>) -> Result<OrderReceipt, AttemptError> {
        let mut tx = match self.begin_claimed(call).await? {
            Claimed::Open(tx) => tx,
            Claimed::Replayed(receipt) => return Ok(receipt),
        };
        let lines = call.order.lines();
        let mut rows: Vec<LockedRow> = Vec::with_capacity(lines.len());
        let mut missing = Vec::new();
        for (sku, _) in lines {
            match self.backend.lock_row(&mut tx, sku, LockWait::Wait).await {
                Ok(Some(row)) => rows.push(row),
                Ok(None) => missing.push(sku.clone()),
                Err(fault) => return self.abandon(tx, fault.definite()).await,
            }
        }
        if !missing.is_empty() {
            return self
                .abandon(tx, DeductError::SkusNotFound { skus: missing }.into())
                .await;
        }
        for ((sku, units), row) in lines.iter().zip(rows.iter_mut()) {
            if row.stock >= *units || !row.sharded {
                continue;
            }
            // Units sit in `Sharded` buckets: bring them into the row, in this transaction.
            match self.gather_locked(&mut tx, sku).await {
                Ok(gathered) => *row = gathered,
                Err(error) => return self.abandon(tx, error).await,
            }
        }
        let short: Vec<ShortLine> = lines
            .iter()
            .zip(&rows)
            .filter(|((_, units), row)| row.stock < *units)
            .map(|((sku, units), row)| ShortLine {
                sku: sku.clone(),
                requested: *units,
                available: row.reported(row.stock),
            })
            .collect();
        if !short.is_empty() {
            return self
                .abandon(tx, DeductError::OrderShort { lines: short }.into())
                .await;
        }
        let mut receipts = Vec::with_capacity(lines.len());
        for ((sku, units), row) in lines.iter().zip(&rows) {
            let line = LineWrite {
                sku,
                quantity: *units,
                order_id: call.order.order_id(),
            };
            let row_after = row.stock - units;
            match self
                .backend
                .write_line(&mut tx, line, row_after, row.reported(row_after))
                .await
            {
                Ok(written) => receipts.push(OrderLineReceipt {
                    sku: sku.clone(),
                    quantity: *units,
                    remaining: written.stock_after,
                    ledger_id: written.ledger_id,
                }),
                Err(fault) => return self.abandon(tx, fault.definite()).await,
            }
        }
        self.commit_order(call, tx, receipts).await
    }

    /// One conditional decrement per line, no reads. A line that misses rolls the order back
    /// and runs it once locked, which applies it or refuses it exactly.
    async fn guarded_order(&self, call: &OrderCall<'_>) -> Result<OrderReceipt, AttemptError> {
        let mut tx = match self.begin_claimed(call).await? {
            Claimed::Open(tx) => tx,
            Claimed::Replayed(receipt) => return Ok(receipt),
        };
        let lines = call.order.lines();
        let mut receipts = Vec::with_capacity(lines.len());
        for (sku, units) in lines {
            let line = LineWrite {
                sku,
                quantity: *units,
                order_id: call.order.order_id(),
            };
            match self.backend.guarded_line(&mut tx, line).await {
                Ok(Some(written)) => receipts.push(OrderLineReceipt {
                    sku: sku.clone(),
                    quantity: *units,
                    remaining: written.stock_after,
                    ledger_id: written.ledger_id,
                }),
                Ok(None) => {
                    self.backend.rollback(tx).await;
                    return self.locked_order(call).await;
                }
                Err(fault) => return self.abandon(tx, fault.definite()).await,
            }
        }
        self.commit_order(call, tx, receipts).await
    }

    /// Begins the order's transaction and claims its id; a taken id answers from the
    /// committed order.
    async fn begin_claimed(&self, call: &OrderCall<'_>) -> Result<Claimed<B::Tx>, AttemptError> {
        let order = call.order;
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let claimed = self
            .backend
            .claim_order(
                &mut tx,
                order.order_id(),
                &order.canonical_lines(),
                order.lines().len(),
            )
            .await;
        match claimed {
            Ok(()) => Ok(Claimed::Open(tx)),
            Err(fault) if fault.kind() == FaultKind::KeyTaken => {
                self.backend.rollback(tx).await;
                Ok(Claimed::Replayed(self.replay_order(call).await?))
            }
            Err(fault) => self.abandon(tx, fault.definite()).await,
        }
    }

    /// Commits; a lost answer is resolved by looking the order up once no transaction holds
    /// its lines' rows.
    async fn commit_order(
        &self,
        call: &OrderCall<'_>,
        tx: B::Tx,
        lines: Vec<OrderLineReceipt>,
    ) -> Result<OrderReceipt, AttemptError> {
        call.exposure.sent();
        let answered = self.backend.commit(tx).await;
        #[cfg(feature = "test-utils")]
        let answered = self.lose_answer_if_asked(&[&call.key], answered);
        match answered {
            Ok(()) => {
                call.exposure.settled();
                Ok(OrderReceipt {
                    order_id: call.order.order_id().clone(),
                    lines,
                    replayed: false,
                    attempts: 1,
                })
            }
            Err(fault) if fault.is_ambiguous() => {
                tracing::warn!(order_id = %call.order.order_id(), %fault, "answer lost after COMMIT; resolving by order id");
                let skus: Vec<_> = call.order.lines().iter().map(|(sku, _)| sku).collect();
                let order_id = call.order.order_id();
                let stored = self
                    .resolve_by(
                        call.exposure,
                        call.deadline,
                        Some(call.key.clone()),
                        fault,
                        || self.backend.settle_and_find_order(&skus, order_id),
                    )
                    .await?;
                // Possibly committed by an earlier call with this id: a replay, as for a
                // client's key.
                stored_receipt(call.order, stored)
            }
            Err(fault) => {
                call.exposure.settled();
                Err(fault.definite())
            }
        }
    }

    /// The committed order's receipt; an id claimed by a transaction that then rolled back
    /// is free again, so the call runs again.
    async fn replay_order(&self, call: &OrderCall<'_>) -> Result<OrderReceipt, AttemptError> {
        match self
            .backend
            .find_order(call.order.order_id())
            .await
            .map_err(Fault::definite)?
        {
            Some(stored) => stored_receipt(call.order, stored),
            None => Err(AttemptError::Retry(RetryCause::IdempotencyRace)),
        }
    }
}

/// The receipt of a committed order (`replayed`), or `OrderMismatch` when `order` has other
/// lines than the ones its id was claimed with.
fn stored_receipt(order: &OrderRequest, stored: StoredOrder) -> Result<OrderReceipt, AttemptError> {
    let mismatches = line_mismatches(&stored.lines, order);
    if !mismatches.is_empty() {
        return Err(DeductError::OrderMismatch { mismatches }.into());
    }
    let mut lines: Vec<OrderLineReceipt> = stored
        .entries
        .into_iter()
        .map(|entry| OrderLineReceipt {
            sku: entry.sku,
            quantity: -entry.delta,
            remaining: entry.stock_after,
            ledger_id: entry.id,
        })
        .collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let matches = lines.len() == order.lines().len()
        && lines
            .iter()
            .zip(order.lines())
            .all(|(line, (sku, units))| &line.sku == sku && line.quantity == *units);
    if !matches {
        return Err(DeductError::Internal {
            context: "a committed order's ledger rows do not match its stored lines",
            source: None,
        }
        .into());
    }
    Ok(OrderReceipt {
        order_id: order.order_id().clone(),
        lines,
        replayed: true,
        attempts: 1,
    })
}
