//! Holds once placed (placing one is `order.rs`'s): reading, confirming, releasing and
//! expiring, written once over the backend's primitives.
//!
//! - **At most once.** Every resolution locks the hold's row first, decides from its state
//!   under that lock, writes every line and the final state, and commits; a second
//!   resolution waits for the lock and finds the hold resolved. The ledger's lines follow in
//!   canonical SKU order, so a resolution never waits in a cycle with an order.
//! - **Expiry at read time, on the database's clock.** A confirm or release of an active hold
//!   past `expires_at` is refused (`HoldExpired`) and changes nothing. Reads report its units
//!   as available. A change about to be refused for want of units that due holds still hold
//!   expires them first and runs again ([`Core::expiring_first`]), so a due hold never costs
//!   a sale before the sweeper comes.
//! - **The sweeper** expires due holds in batches, one transaction per batch, skipping holds
//!   another transaction has locked (`FOR UPDATE SKIP LOCKED`), so several service instances
//!   sweep side by side.
//! - **A lost COMMIT** is resolved like an order's: wait out the hold's and its SKUs' locks,
//!   then read the hold.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::order::Placing;
use super::{Backend, Core, ExpiredBy, Exposure, Fault, LineReason, LineWrite, LockWait, StoredHold};
use crate::domain::{
    ConfirmLines, HOLD_SWEEP_BATCH_MAX, HoldId, HoldLineReceipt, HoldReceipt, HoldRequest, HoldState,
    LedgerReason, SkuId,
};
use crate::error::{AttemptError, DeductError, InvalidInput};

/// How many times a refused change expires due holds and runs again.
const EXPIRY_PASSES_MAX: u32 = 3;

/// Due holds expired per transaction when a refusal expires them.
const EXPIRE_ON_REFUSAL_BATCH: u32 = 100;

/// What a refused call learnt about due holds: set when the read that explained its refusal
/// also found no due hold on the SKU, in the same snapshot, so `expiring_first` need not
/// ask again (a refusal then costs two round trips, not three).
#[derive(Debug, Default)]
pub(crate) struct DueHolds(AtomicBool);

impl DueHolds {
    pub(crate) fn rule_out(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// True once, after a refusal ruled due holds out; cleared for the next pass.
    fn take_ruled_out(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// How a hold is resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Resolve<'a> {
    Confirm(&'a ConfirmLines),
    Release,
}

impl Resolve<'_> {
    fn target(self) -> HoldState {
        match self {
            Resolve::Confirm(_) => HoldState::Confirmed,
            Resolve::Release => HoldState::Released,
        }
    }
}

/// One line write of a resolution, owned (the hold's id and SKU come from its stored rows).
struct PlannedLine {
    sku: SkuId,
    units: i64,
    reason: LineReason,
    hold_id: HoldId,
}

impl<B: Backend> Core<B> {
    /// Places a hold (see `order.rs`) by `deadline`; a replay answers with the hold as it
    /// stands now.
    pub(crate) async fn reserve(
        &self,
        hold: &HoldRequest,
        deadline: Instant,
    ) -> Result<HoldReceipt, DeductError> {
        let placed = self.place(Placing::Hold(hold), deadline).await?;
        if let Some(stored) = placed.stored_hold {
            // A replay: the hold as the lookup that found it read it, with no further read (a
            // failed read here could not honestly say "nothing changed": this very call may
            // be the one whose lost COMMIT the lookup resolved).
            let mut receipt = hold_receipt(stored, true)?;
            receipt.attempts = placed.attempts;
            return Ok(receipt);
        }
        let expires_at = placed.expires_at.ok_or(DeductError::Internal {
            context: "a placed hold has no expiry",
            source: None,
        })?;
        Ok(HoldReceipt {
            hold_id: hold.hold_id().clone(),
            state: HoldState::Active,
            expires_at,
            lines: placed
                .lines
                .into_iter()
                .map(|line| HoldLineReceipt {
                    sku: line.sku,
                    quantity: line.quantity,
                    confirmed: 0,
                    returned: 0,
                    available: line.remaining,
                })
                .collect(),
            replayed: false,
            attempts: placed.attempts,
        })
    }

    /// The hold as it stands (a due hold reads as expired).
    pub(crate) async fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        let stored = self
            .read(|| self.backend.find_hold(hold_id))
            .await?
            .ok_or(DeductError::HoldNotFound)?;
        hold_receipt(stored, false)
    }

    /// Confirms or releases a hold under the retry policy and the deadline.
    pub(crate) async fn resolve_hold(
        &self,
        hold_id: &HoldId,
        resolve: Resolve<'_>,
    ) -> Result<HoldReceipt, DeductError> {
        let key = hold_id.idempotency_key();
        let deadline = Instant::now() + self.config.deadline;
        let exposure = Exposure::default();
        let attempts = self.run(deadline, |_| {
            self.resolve_attempt(hold_id, resolve, deadline, &exposure)
        });
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(mut receipt, attempts)| {
                receipt.attempts = attempts;
                receipt
            }),
            Err(_) => Err(self.past_deadline(&exposure, Some(&key))),
        };
        self.counted(result)
    }

    async fn resolve_attempt(
        &self,
        hold_id: &HoldId,
        resolve: Resolve<'_>,
        deadline: Instant,
        exposure: &Exposure,
    ) -> Result<HoldReceipt, AttemptError> {
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let hold = match self.backend.lock_hold(&mut tx, hold_id).await {
            Ok(Some(hold)) => hold,
            Ok(None) => return self.abandon(tx, DeductError::HoldNotFound.into()).await,
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        if let Some(answer) = settled_answer(&hold, resolve) {
            self.backend.rollback(tx).await;
            return answer.map_err(AttemptError::from);
        }
        let planned = match plan_resolution(&hold, resolve) {
            Ok(planned) => planned,
            Err(error) => return self.abandon(tx, error.into()).await,
        };
        // Before anything is written: once the COMMIT is sent, the answer must be the receipt.
        let mut receipt = match hold_receipt(hold.clone(), false) {
            Ok(receipt) => receipt,
            Err(error) => return self.abandon(tx, error.into()).await,
        };
        let written = match self
            .write_resolution(&mut tx, &planned, &[&hold], resolve.target())
            .await
        {
            Ok(written) => written,
            Err(error) => return self.abandon(tx, error).await,
        };
        let skus: Vec<&SkuId> = planned.iter().map(|line| &line.sku).collect();
        self.commit_resolution(tx, &hold, resolve.target(), &skus, deadline, exposure)
            .await?;
        // Committed: the hold as it was, moved by what this resolution wrote.
        receipt.state = resolve.target();
        for (line, stock_after) in planned.iter().zip(written) {
            if let Some(receipt_line) = receipt.lines.iter_mut().find(|l| l.sku == line.sku) {
                match line.reason {
                    LineReason::Confirm => receipt_line.confirmed += line.units,
                    _ => receipt_line.returned += line.units,
                }
                receipt_line.available = stock_after;
            }
        }
        Ok(receipt)
    }

    /// Writes every planned line (sorted by SKU, then hold) and each hold's final state;
    /// returns each line's `stock_after`.
    async fn write_resolution(
        &self,
        tx: &mut B::Tx,
        planned: &[PlannedLine],
        holds: &[&StoredHold],
        state: HoldState,
    ) -> Result<Vec<i64>, AttemptError> {
        let mut written = Vec::with_capacity(planned.len());
        for line in planned {
            let write = LineWrite {
                sku: &line.sku,
                quantity: line.units,
                reason: line.reason,
                reference: line.hold_id.as_str(),
            };
            match self.backend.guarded_line(tx, write).await {
                Ok(Some(row)) => written.push(row.stock_after),
                Ok(None) => {
                    return Err(DeductError::Internal {
                        context: "a hold's units are missing from its SKU's reserved",
                        source: None,
                    }
                    .into());
                }
                Err(fault) => return Err(fault.definite()),
            }
        }
        for hold in holds {
            self.backend
                .set_hold_state(tx, &hold.hold_id, state)
                .await
                .map_err(Fault::definite)?;
        }
        Ok(written)
    }

    /// Commits a resolution of `hold` (and any others in the same transaction); a lost answer
    /// is resolved by reading `hold` once no transaction holds it or `skus`.
    async fn commit_resolution(
        &self,
        tx: B::Tx,
        hold: &StoredHold,
        target: HoldState,
        skus: &[&SkuId],
        deadline: Instant,
        exposure: &Exposure,
    ) -> Result<(), AttemptError> {
        let key = hold.hold_id.idempotency_key();
        exposure.sent();
        let answered = self.backend.commit(tx).await;
        #[cfg(feature = "test-utils")]
        let answered = self.lose_answer_if_asked(&[&key], answered);
        match answered {
            Ok(()) => {
                exposure.settled();
                Ok(())
            }
            Err(fault) if fault.is_ambiguous() => {
                tracing::warn!(hold_id = %hold.hold_id, %fault, "answer lost after COMMIT; resolving by hold id");
                let lookup = || async {
                    let found = self.backend.settle_and_find_hold(skus, &hold.hold_id).await?;
                    // Still active: the lost resolution aborted, so run it again (which may
                    // find it resolved another way by then, and say so).
                    Ok(found.filter(|stored| stored.state == target).map(|_| ()))
                };
                self.resolve_by(exposure, deadline, Some(key.clone()), fault, lookup)
                    .await
            }
            Err(fault) => {
                exposure.settled();
                Err(fault.definite())
            }
        }
    }

    /// Expires up to `limit` due holds in one transaction: with `sku`, those with a line on
    /// it (waiting for any another transaction holds), else any (skipping those). Returns how
    /// many it expired.
    pub(crate) async fn expire_due(
        &self,
        sku: Option<&SkuId>,
        limit: u32,
        by: ExpiredBy,
    ) -> Result<usize, DeductError> {
        if limit == 0 || limit > HOLD_SWEEP_BATCH_MAX {
            return Err(InvalidInput::SweepBatch {
                given: limit,
                max: HOLD_SWEEP_BATCH_MAX,
            }
            .into());
        }
        let deadline = Instant::now() + self.config.deadline;
        let exposure = Exposure::default();
        let attempts = self.run(deadline, |_| self.expire_attempt(sku, limit, deadline, &exposure));
        let result = match tokio::time::timeout_at(deadline.into(), attempts).await {
            Ok(result) => result.map(|(expired, _)| expired),
            Err(_) => Err(self.past_deadline(&exposure, None)),
        };
        if let Ok(expired) = result {
            self.stats.expired_holds(by, expired);
        }
        self.counted(result)
    }

    async fn expire_attempt(
        &self,
        sku: Option<&SkuId>,
        limit: u32,
        deadline: Instant,
        exposure: &Exposure,
    ) -> Result<usize, AttemptError> {
        let mut tx = self
            .backend
            .begin(LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let holds = match self.backend.lock_due_holds(&mut tx, sku, limit).await {
            Ok(holds) => holds,
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let Some(first) = holds.first() else {
            self.backend.rollback(tx).await;
            return Ok(0);
        };
        let mut planned: Vec<PlannedLine> = holds
            .iter()
            .flat_map(|hold| {
                reserved_lines(hold).map(|(sku, units)| PlannedLine {
                    sku: sku.clone(),
                    units,
                    reason: LineReason::Expire,
                    hold_id: hold.hold_id.clone(),
                })
            })
            .collect();
        // One canonical SKU order across the whole batch, as every multi-row writer keeps.
        planned.sort_by(|a, b| (&a.sku, &a.hold_id).cmp(&(&b.sku, &b.hold_id)));
        let locked: Vec<&StoredHold> = holds.iter().collect();
        if let Err(error) = self
            .write_resolution(&mut tx, &planned, &locked, HoldState::Expired)
            .await
        {
            return self.abandon(tx, error).await;
        }
        let skus: Vec<&SkuId> = planned.iter().map(|line| &line.sku).collect();
        self.commit_resolution(tx, first, HoldState::Expired, &skus, deadline, exposure)
            .await?;
        Ok(holds.len())
    }

    /// Runs `change` under one `deadline` for the whole call; when it is refused for want of
    /// units while due holds still hold units of the SKUs it was short on, expires those
    /// holds and runs it again (at most [`EXPIRY_PASSES_MAX`] times, all within the same
    /// deadline). The refusal it finally gives is then true of the stock with every due hold
    /// counted as available. A refusal whose own read found no due hold (`known`) is final
    /// at once.
    pub(crate) async fn expiring_first<T, F, Fut>(
        &self,
        sku: Option<&SkuId>,
        deadline: Instant,
        known: Option<&DueHolds>,
        change: F,
    ) -> Result<T, DeductError>
    where
        F: Fn(Instant) -> Fut,
        Fut: Future<Output = Result<T, DeductError>>,
    {
        let mut passes = 0;
        loop {
            let result = change(deadline).await;
            if known.is_some_and(DueHolds::take_ruled_out) {
                return result;
            }
            let short: Vec<&SkuId> = match &result {
                Err(DeductError::InsufficientStock { .. }) => sku.into_iter().collect(),
                Err(DeductError::OrderShort { lines }) => lines.iter().map(|line| &line.sku).collect(),
                _ => return result,
            };
            if passes == EXPIRY_PASSES_MAX || Instant::now() >= deadline {
                return result;
            }
            passes += 1;
            let mut expired = 0;
            for sku in short {
                expired += match tokio::time::timeout_at(deadline.into(), self.expire_due_on(sku)).await {
                    Ok(expired) => expired?,
                    // Nothing of this call was sent yet: a definite refusal to come back.
                    Err(_) => return Err(self.past_deadline(&Exposure::default(), None)),
                };
            }
            if expired == 0 {
                return result;
            }
        }
    }

    /// Expires the due holds with a line on `sku`, if a plain read finds any.
    async fn expire_due_on(&self, sku: &SkuId) -> Result<usize, DeductError> {
        let unavailable = |error: DeductError| DeductError::Unavailable {
            reason: "could not expire the due holds a refusal depends on",
            retry_after: super::UNAVAILABLE_RETRY_AFTER,
            source: Some(Box::new(error)),
        };
        let due = self
            .read(|| self.backend.has_due_holds(sku))
            .await
            .map_err(unavailable)?;
        if !due {
            return Ok(0);
        }
        self.expire_due(Some(sku), EXPIRE_ON_REFUSAL_BATCH, ExpiredBy::Refusal)
            .await
            .map_err(unavailable)
    }
}

/// The answer without writing anything, when the hold's state already decides it: a replay
/// of the same resolution, or a refusal.
fn settled_answer(hold: &StoredHold, resolve: Resolve<'_>) -> Option<Result<HoldReceipt, DeductError>> {
    let expired = DeductError::HoldExpired {
        expires_at: hold.expires_at,
    };
    match hold.state {
        HoldState::Active if hold.due => Some(Err(expired)),
        HoldState::Active => None,
        HoldState::Expired => Some(Err(expired)),
        state if state == resolve.target() => {
            let receipt = match hold_receipt(hold.clone(), true) {
                Ok(receipt) => receipt,
                Err(error) => return Some(Err(error)),
            };
            let same = match resolve {
                Resolve::Release => true,
                Resolve::Confirm(lines) => receipt
                    .lines
                    .iter()
                    .all(|line| line.confirmed == lines.units_of(&line.sku, line.quantity)),
            };
            Some(if same {
                Ok(receipt)
            } else {
                Err(DeductError::HoldResolved { state })
            })
        }
        state => Some(Err(DeductError::HoldResolved { state })),
    }
}

/// The lines that resolve an active hold, sorted by SKU: for a release, every line back to
/// stock; for a confirm, every line confirmed (its confirmed units, possibly 0), and the
/// unconfirmed rest released. A partial confirm naming a SKU the hold lacks, or more units
/// than it holds, is refused.
fn plan_resolution(hold: &StoredHold, resolve: Resolve<'_>) -> Result<Vec<PlannedLine>, DeductError> {
    let held: BTreeMap<&SkuId, i64> = reserved_lines(hold).collect();
    if let Resolve::Confirm(ConfirmLines::Partial(lines)) = resolve {
        for (sku, units) in lines {
            let has = held.get(sku).copied().unwrap_or(0);
            if *units > has {
                return Err(InvalidInput::ConfirmLine {
                    sku: sku.to_string(),
                    given: *units,
                    held: has,
                }
                .into());
            }
        }
    }
    let line = |sku: &SkuId, units, reason| PlannedLine {
        sku: sku.clone(),
        units,
        reason,
        hold_id: hold.hold_id.clone(),
    };
    let mut planned = Vec::with_capacity(held.len() * 2);
    for (sku, units) in held {
        match resolve {
            Resolve::Release => planned.push(line(sku, units, LineReason::Release)),
            Resolve::Confirm(lines) => {
                let confirmed = lines.units_of(sku, units);
                planned.push(line(sku, confirmed, LineReason::Confirm));
                if confirmed < units {
                    planned.push(line(sku, units - confirmed, LineReason::Release));
                }
            }
        }
    }
    Ok(planned)
}

/// `(sku, units)` of each of the hold's `reserve` rows.
fn reserved_lines(hold: &StoredHold) -> impl Iterator<Item = (&SkuId, i64)> {
    hold.entries
        .iter()
        .filter(|entry| entry.reason == LedgerReason::Reserve)
        .map(|entry| (&entry.sku, -entry.delta))
}

/// The hold as its rows show it.
pub(crate) fn hold_receipt(hold: StoredHold, replayed: bool) -> Result<HoldReceipt, DeductError> {
    let state = match hold.state {
        HoldState::Active if hold.due => HoldState::Expired,
        state => state,
    };
    let mut lines: BTreeMap<SkuId, HoldLineReceipt> = BTreeMap::new();
    for entry in &hold.entries {
        let line = lines.entry(entry.sku.clone()).or_insert_with(|| HoldLineReceipt {
            sku: entry.sku.clone(),
            quantity: 0,
            confirmed: 0,
            returned: 0,
            available: entry.stock_after,
        });
        match entry.reason {
            LedgerReason::Reserve => line.quantity = -entry.delta,
            LedgerReason::Release | LedgerReason::Expire => line.returned += entry.delta,
            _ => {}
        }
        // Entries come in id order: the last one is the hold's latest write on the SKU.
        line.available = entry.stock_after;
    }
    let mut lines: Vec<HoldLineReceipt> = lines.into_values().collect();
    if hold.state == HoldState::Confirmed {
        for line in &mut lines {
            line.confirmed = line.quantity - line.returned;
        }
    }
    if lines.iter().any(|line| line.quantity <= 0) {
        return Err(DeductError::Internal {
            context: "a stored hold has a line without its reserve row",
            source: None,
        });
    }
    Ok(HoldReceipt {
        hold_id: hold.hold_id,
        state,
        expires_at: hold.expires_at,
        lines,
        replayed,
        attempts: 1,
    })
}
