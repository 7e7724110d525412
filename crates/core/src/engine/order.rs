//! Multi-line orders and holds, written once over the backend's primitives: all lines apply
//! or none do, in one transaction. A hold is placed exactly like an order; only its claim (a
//! hold row with an expiry), its lines' reason (`reserve`, which also moves the units into
//! `reserved`) and its receipt differ.
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

use chrono::{DateTime, Utc};

use super::{
    Backend, Core, Exposure, Fault, FaultKind, LineReason, LineWrite, LockWait, LockedRow, StoredHold,
    StoredOrder,
};
use crate::domain::{
    HoldRequest, IdempotencyKey, LedgerEntry, LineMismatch, OrderLineReceipt, OrderReceipt, OrderRequest,
    OrderStrategy, ShortLine, SkuId, line_mismatches,
};
use crate::error::{AttemptError, DeductError, RetryCause};

/// What is being placed.
#[derive(Clone, Copy)]
pub(crate) enum Placing<'a> {
    Order(&'a OrderRequest),
    Hold(&'a HoldRequest),
}

impl Placing<'_> {
    fn reference(&self) -> &str {
        match self {
            Placing::Order(order) => order.order_id().as_str(),
            Placing::Hold(hold) => hold.hold_id().as_str(),
        }
    }

    fn lines(&self) -> &[(SkuId, i64)] {
        match self {
            Placing::Order(order) => order.lines(),
            Placing::Hold(hold) => hold.lines(),
        }
    }

    fn strategy(&self) -> OrderStrategy {
        match self {
            Placing::Order(order) => order.strategy(),
            Placing::Hold(hold) => hold.strategy(),
        }
    }

    fn line_reason(&self) -> LineReason {
        match self {
            Placing::Order(_) => LineReason::Order,
            Placing::Hold(_) => LineReason::Reserve,
        }
    }

    fn key(&self) -> IdempotencyKey {
        match self {
            Placing::Order(order) => order.order_id().idempotency_key(),
            Placing::Hold(hold) => hold.hold_id().idempotency_key(),
        }
    }

    fn mismatch(&self, mismatches: Vec<LineMismatch>) -> DeductError {
        match self {
            Placing::Order(_) => DeductError::OrderMismatch { mismatches },
            Placing::Hold(_) => DeductError::HoldMismatch { mismatches },
        }
    }
}

/// What a placement committed (or had committed before): its lines, and a hold's expiry.
#[derive(Debug)]
pub(crate) struct Placed {
    pub(crate) lines: Vec<OrderLineReceipt>,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    /// A replayed hold as it stands now (it may have been resolved since it was placed), read
    /// in the same lookup that found it, so the answer needs no further read.
    pub(crate) stored_hold: Option<StoredHold>,
    pub(crate) replayed: bool,
    pub(crate) attempts: u32,
}

/// An order or hold as stored, for replays and resolutions.
enum Stored {
    Order(StoredOrder),
    Hold(StoredHold),
}

/// One placement in flight.
struct PlaceCall<'a> {
    placing: Placing<'a>,
    /// The id as a key, for `OutcomeUnknown` answers and test hooks.
    key: IdempotencyKey,
    deadline: Instant,
    exposure: &'a Exposure,
}

/// After claiming the id: a transaction to go on with (and a hold's expiry), or what was
/// committed before.
enum Claimed<Tx> {
    Open(Tx, Option<DateTime<Utc>>),
    Replayed(Placed),
}

impl<B: Backend> Core<B> {
    /// Places an order under the retry policy, by `deadline`.
    pub(crate) async fn place_order(
        &self,
        order: &OrderRequest,
        deadline: Instant,
    ) -> Result<OrderReceipt, DeductError> {
        let placed = self.place(Placing::Order(order), deadline).await?;
        Ok(OrderReceipt {
            order_id: order.order_id().clone(),
            lines: placed.lines,
            replayed: placed.replayed,
            attempts: placed.attempts,
        })
    }

    /// Places an order's or a hold's lines under the retry policy, by `deadline`.
    pub(crate) async fn place(&self, placing: Placing<'_>, deadline: Instant) -> Result<Placed, DeductError> {
        let key = placing.key();
        let exposure = Exposure::default();
        let call = PlaceCall {
            placing,
            key,
            deadline,
            exposure: &exposure,
        };
        let attempts = self.run(deadline, |_| async {
            match placing.strategy() {
                OrderStrategy::Locked => self.locked_place(&call).await,
                // A `Coalesced` order placed on its own (alone in its batch, or left out of
                // it) takes the guarded path.
                OrderStrategy::Guarded | OrderStrategy::Coalesced => self.guarded_place(&call).await,
            }
        });
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(mut placed, attempts)| {
                placed.attempts = attempts;
                placed
            }),
            Err(_) => Err(self.past_deadline(&exposure, Some(&call.key))),
        };
        self.counted(result)
    }

    /// Locks every line's row, checks them all against what the locks read, writes, commits.
    async fn locked_place(&self, call: &PlaceCall<'_>) -> Result<Placed, AttemptError> {
        let (mut tx, expires_at) = match self.begin_claimed(call).await? {
            Claimed::Open(tx, expires_at) => (tx, expires_at),
            Claimed::Replayed(placed) => return Ok(placed),
        };
        let lines = call.placing.lines();
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
            let line = self.line_of(call, sku, *units);
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
        self.commit_placed(call, tx, receipts, expires_at).await
    }

    /// One conditional decrement per line, no reads. A line that misses rolls the placement
    /// back and runs it once locked, which applies it or refuses it exactly.
    async fn guarded_place(&self, call: &PlaceCall<'_>) -> Result<Placed, AttemptError> {
        let (mut tx, expires_at) = match self.begin_claimed(call).await? {
            Claimed::Open(tx, expires_at) => (tx, expires_at),
            Claimed::Replayed(placed) => return Ok(placed),
        };
        let lines = call.placing.lines();
        let mut receipts = Vec::with_capacity(lines.len());
        for (sku, units) in lines {
            let line = self.line_of(call, sku, *units);
            match self.backend.guarded_line(&mut tx, line).await {
                Ok(Some(written)) => receipts.push(OrderLineReceipt {
                    sku: sku.clone(),
                    quantity: *units,
                    remaining: written.stock_after,
                    ledger_id: written.ledger_id,
                }),
                Ok(None) => {
                    self.backend.rollback(tx).await;
                    return self.locked_place(call).await;
                }
                Err(fault) => return self.abandon(tx, fault.definite()).await,
            }
        }
        self.commit_placed(call, tx, receipts, expires_at).await
    }

    fn line_of<'a>(&self, call: &'a PlaceCall<'_>, sku: &'a SkuId, units: i64) -> LineWrite<'a> {
        LineWrite {
            sku,
            quantity: units,
            reason: call.placing.line_reason(),
            reference: call.placing.reference(),
        }
    }

    /// Begins the transaction and claims the id; a taken id answers from what was committed.
    async fn begin_claimed(&self, call: &PlaceCall<'_>) -> Result<Claimed<B::Tx>, AttemptError> {
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let claimed = match call.placing {
            Placing::Order(order) => self
                .backend
                .claim_order(
                    &mut tx,
                    order.order_id(),
                    &order.canonical_lines(),
                    order.lines().len(),
                )
                .await
                .map(|()| None),
            Placing::Hold(hold) => self
                .backend
                .claim_hold(
                    &mut tx,
                    hold.hold_id(),
                    &hold.canonical_lines(),
                    hold.lines().len(),
                    hold.ttl_s(),
                )
                .await
                .map(Some),
        };
        match claimed {
            Ok(expires_at) => Ok(Claimed::Open(tx, expires_at)),
            Err(fault) if fault.kind() == FaultKind::KeyTaken => {
                self.backend.rollback(tx).await;
                Ok(Claimed::Replayed(self.replay_placed(call).await?))
            }
            Err(fault) => self.abandon(tx, fault.definite()).await,
        }
    }

    /// Commits; a lost answer is resolved by looking the id up once no transaction holds its
    /// lines' rows.
    async fn commit_placed(
        &self,
        call: &PlaceCall<'_>,
        tx: B::Tx,
        lines: Vec<OrderLineReceipt>,
        expires_at: Option<DateTime<Utc>>,
    ) -> Result<Placed, AttemptError> {
        call.exposure.sent();
        let answered = self.backend.commit(tx).await;
        #[cfg(feature = "test-utils")]
        let answered = self.lose_answer_if_asked(&[&call.key], answered);
        let placed = Placed {
            lines,
            expires_at,
            stored_hold: None,
            replayed: false,
            attempts: 1,
        };
        match answered {
            Ok(()) => {
                call.exposure.settled();
                Ok(placed)
            }
            Err(fault) if fault.is_ambiguous() => {
                tracing::warn!(id = call.placing.reference(), %fault, "answer lost after COMMIT; resolving by id");
                let skus: Vec<_> = call.placing.lines().iter().map(|(sku, _)| sku).collect();
                let own_ids = sorted(placed.lines.iter().map(|line| line.ledger_id).collect());
                self.resolve_by(
                    call.exposure,
                    call.deadline,
                    Some(call.key.clone()),
                    fault,
                    || async {
                        // Only this transaction's own rows count (see `Core::land` on
                        // ledger ids): the id placed by another call after this transaction
                        // aborted (a client sending it twice) means this one did not apply,
                        // and the next attempt answers that placement as a replay.
                        let stored = self.settle_and_find_placed(call.placing, &skus).await?;
                        Ok(stored.filter(|stored| sorted(placement_ledger_ids(stored)) == own_ids))
                    },
                )
                .await?;
                Ok(placed)
            }
            Err(fault) => {
                call.exposure.settled();
                Err(fault.definite())
            }
        }
    }

    async fn settle_and_find_placed(
        &self,
        placing: Placing<'_>,
        skus: &[&SkuId],
    ) -> Result<Option<Stored>, Fault> {
        Ok(match placing {
            Placing::Order(order) => self
                .backend
                .settle_and_find_order(skus, order.order_id())
                .await?
                .map(Stored::Order),
            Placing::Hold(hold) => self
                .backend
                .settle_and_find_hold(skus, hold.hold_id())
                .await?
                .map(Stored::Hold),
        })
    }

    /// What was committed under the id; an id claimed by a transaction that then rolled back
    /// is free again, so the call runs again.
    async fn replay_placed(&self, call: &PlaceCall<'_>) -> Result<Placed, AttemptError> {
        let stored = match call.placing {
            Placing::Order(order) => self
                .backend
                .find_order(order.order_id())
                .await
                .map(|found| found.map(Stored::Order)),
            Placing::Hold(hold) => self
                .backend
                .find_hold(hold.hold_id())
                .await
                .map(|found| found.map(Stored::Hold)),
        }
        .map_err(Fault::definite)?;
        match stored {
            Some(stored) => stored_placed(call.placing, stored),
            None => Err(AttemptError::Retry(RetryCause::IdempotencyRace)),
        }
    }
}

fn sorted(mut ids: Vec<i64>) -> Vec<i64> {
    ids.sort_unstable();
    ids
}

/// The ledger rows that placed a stored order or hold (a hold's later confirm, release or
/// expire rows are not among them).
fn placement_entries(stored: &Stored) -> Vec<&LedgerEntry> {
    match stored {
        Stored::Order(order) => order.entries.iter().collect(),
        Stored::Hold(hold) => hold
            .entries
            .iter()
            .filter(|entry| entry.reason == LineReason::Reserve.ledger_reason())
            .collect(),
    }
}

fn placement_ledger_ids(stored: &Stored) -> Vec<i64> {
    placement_entries(stored).iter().map(|entry| entry.id).collect()
}

/// What a committed order or hold placed (`replayed`), or a mismatch when `placing` has other
/// lines than the ones its id was claimed with.
fn stored_placed(placing: Placing<'_>, stored: Stored) -> Result<Placed, AttemptError> {
    let entries: Vec<LedgerEntry> = placement_entries(&stored).into_iter().cloned().collect();
    let (lines, expires_at, stored_hold) = match stored {
        Stored::Order(order) => (order.lines, None, None),
        Stored::Hold(hold) => (hold.lines.clone(), Some(hold.expires_at), Some(hold)),
    };
    let mismatches = line_mismatches(&lines, placing.lines());
    if !mismatches.is_empty() {
        return Err(placing.mismatch(mismatches).into());
    }
    let mut lines: Vec<OrderLineReceipt> = entries
        .into_iter()
        .map(|entry| OrderLineReceipt {
            sku: entry.sku,
            quantity: -entry.delta,
            remaining: entry.stock_after,
            ledger_id: entry.id,
        })
        .collect();
    lines.sort_by(|a, b| a.sku.cmp(&b.sku));
    let matches = lines.len() == placing.lines().len()
        && lines
            .iter()
            .zip(placing.lines())
            .all(|(line, (sku, units))| &line.sku == sku && line.quantity == *units);
    if !matches {
        return Err(DeductError::Internal {
            context: "a committed order's or hold's ledger rows do not match its stored lines",
            source: None,
        }
        .into());
    }
    Ok(Placed {
        lines,
        expires_at,
        stored_hold,
        replayed: true,
        attempts: 1,
    })
}
