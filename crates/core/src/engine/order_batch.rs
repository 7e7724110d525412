//! The `Coalesced` order path, written once: a batch of orders (queued together because they
//! share a hot SKU) placed in one transaction, each order still succeeding or being refused
//! on its own, against the stock the orders before it left.
//!
//! One attempt:
//! 1. lock the rows of every SKU the batch touches, in canonical order (the order every
//!    transaction takes row locks in, so batches and single orders never wait in a cycle);
//! 2. decide the orders in arrival order against what the locks read ([`plan_orders`]);
//! 3. claim the ids of the orders that apply (one statement, in id order). A refused order
//!    claims nothing, so its id stays free, as after a single refusal;
//! 4. write every applied line (one statement where the database allows), commit.
//!
//! An id already claimed (a replay, or a concurrent placement of the same id) fails the
//! claim: the attempt rolls back and the next one first looks every id up, so replays leave
//! the batch and are answered on their own. A lost COMMIT is resolved by the first applied
//! order's id once no transaction holds the batch's rows: the batch is one transaction, so
//! that order stands for all of them. An order the batch cannot decide (a short line whose
//! units may sit in `Sharded` buckets), and a second order with an id already in the batch,
//! are placed on their own after it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use super::batch::with_key;
use super::order_plan::{Decision, plan_orders};
use super::{Backend, Core, Exposure, Fault, FaultKind, LineReason, LineWrite, OrderClaim, PlannedLine};
use crate::coalesce::{BatchExecutor, Batched};
use crate::domain::{IdempotencyKey, OrderLineReceipt, OrderReceipt, OrderRequest, SkuId};
use crate::error::{AttemptError, DeductError, RetryCause};

impl Batched for OrderRequest {
    fn outcome_key(&self) -> IdempotencyKey {
        self.order_id().idempotency_key()
    }
}

/// The order coalescer's executor: the engine's order batch flow.
pub(crate) struct OrderBatchRunner<B>(pub(crate) Arc<Core<B>>);

impl<B: Backend> BatchExecutor for OrderBatchRunner<B> {
    type Item = OrderRequest;
    type Receipt = OrderReceipt;

    async fn execute_batch(
        &self,
        _sku: &SkuId,
        orders: &[OrderRequest],
    ) -> Vec<Result<OrderReceipt, DeductError>> {
        self.0.execute_order_batch(orders).await
    }
}

/// An order the batch applies: its index in the batch, the order, and each line's row stock
/// after it with the `stock_after` to record ([`Decision::Apply`]).
type Applied<'a> = (usize, &'a OrderRequest, Vec<(i64, i64)>);

/// What one batch attempt decided for each of its orders.
enum Outcome {
    Placed(OrderReceipt),
    Refused(DeductError),
    /// Placed on its own after the batch.
    Later,
}

impl<B: Backend> Core<B> {
    async fn execute_order_batch(&self, orders: &[OrderRequest]) -> Vec<Result<OrderReceipt, DeductError>> {
        let deadline = Instant::now() + self.config.deadline;
        if let [order] = orders {
            // Uncontended: the guarded placement, with no batch bookkeeping.
            return vec![self.place_order(order, deadline).await];
        }
        // A repeated id inside one batch would collide with its own claim: the first one
        // stays, the rest are placed (replayed) after the batch commits.
        let mut ids = HashSet::with_capacity(orders.len());
        let first_of_id: Vec<bool> = orders.iter().map(|order| ids.insert(order.order_id())).collect();
        let batched: Vec<&OrderRequest> = orders
            .iter()
            .zip(&first_of_id)
            .filter(|(_, first)| **first)
            .map(|(order, _)| order)
            .collect();
        let exposure = Exposure::default();
        let attempts = self.run(deadline, |attempt| {
            self.order_batch_attempt(&batched, &exposure, deadline, attempt > 1)
        });
        let decided: Vec<Result<Outcome, DeductError>> =
            match tokio::time::timeout_at(deadline.into(), attempts).await {
                Ok(Ok((outcomes, attempts))) => outcomes
                    .into_iter()
                    .map(|outcome| {
                        Ok(match outcome {
                            Outcome::Placed(mut receipt) => {
                                receipt.attempts = attempts;
                                Outcome::Placed(receipt)
                            }
                            other => other,
                        })
                    })
                    .collect(),
                Ok(Err(error)) => batched
                    .iter()
                    .map(|order| Err(with_key(&error, &order.outcome_key())))
                    .collect(),
                Err(_) => batched
                    .iter()
                    .map(|order| Err(self.past_deadline(&exposure, Some(&order.outcome_key()))))
                    .collect(),
            };
        let mut decided = decided.into_iter();
        let mut results = Vec::with_capacity(orders.len());
        for (order, first) in orders.iter().zip(first_of_id) {
            let outcome = if first {
                decided.next().expect("one outcome per batched order")
            } else {
                Ok(Outcome::Later)
            };
            results.push(match outcome {
                Ok(Outcome::Placed(receipt)) => Ok(receipt),
                Ok(Outcome::Refused(error)) => Err(error),
                Err(error) => self.counted(Err(error)),
                // Counted inside, as every placement is.
                Ok(Outcome::Later) => self.place_order(order, deadline).await,
            });
        }
        results
    }

    async fn order_batch_attempt(
        &self,
        orders: &[&OrderRequest],
        exposure: &Exposure,
        deadline: Instant,
        look_up_ids: bool,
    ) -> Result<Vec<Outcome>, AttemptError> {
        let mut outcomes: Vec<Option<Outcome>> = orders.iter().map(|_| None).collect();
        if look_up_ids {
            // An earlier attempt found an id claimed: answer replays on their own.
            for (order, outcome) in orders.iter().zip(outcomes.iter_mut()) {
                let found = self
                    .backend
                    .find_order(order.order_id())
                    .await
                    .map_err(Fault::definite)?;
                if found.is_some() {
                    *outcome = Some(Outcome::Later);
                }
            }
        }
        let open: Vec<(usize, &OrderRequest)> = orders
            .iter()
            .enumerate()
            .filter(|(index, _)| outcomes[*index].is_none())
            .map(|(index, order)| (index, *order))
            .collect();
        if open.is_empty() {
            return Ok(outcomes
                .into_iter()
                .map(|o| o.expect("every order decided"))
                .collect());
        }
        let skus: Vec<&SkuId> = open
            .iter()
            .flat_map(|(_, order)| order.lines().iter().map(|(sku, _)| sku))
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut tx = self
            .backend
            .begin(super::LockWait::Wait)
            .await
            .map_err(Fault::definite)?;
        let rows = match self.backend.lock_rows(&mut tx, &skus).await {
            Ok(rows) if rows.len() == skus.len() => rows,
            Ok(_) => {
                let error = DeductError::Internal {
                    context: "lock_rows answered a different number of rows than asked",
                    source: None,
                };
                return self.abandon(tx, error.into()).await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };
        let rows: HashMap<&SkuId, super::LockedRow> = skus
            .iter()
            .zip(rows)
            .filter_map(|(sku, row)| row.map(|row| (*sku, row)))
            .collect();
        let open_orders: Vec<&OrderRequest> = open.iter().map(|(_, order)| *order).collect();
        let decisions = plan_orders(&open_orders, &rows);

        let mut applied: Vec<Applied<'_>> = Vec::new();
        for ((index, order), decision) in open.iter().zip(decisions) {
            outcomes[*index] = match decision {
                Decision::Apply(after) => {
                    applied.push((*index, *order, after));
                    None
                }
                Decision::Short(lines) => Some(Outcome::Refused(DeductError::OrderShort { lines })),
                Decision::Missing(skus) => Some(Outcome::Refused(DeductError::SkusNotFound { skus })),
                Decision::Alone => Some(Outcome::Later),
            };
        }
        if applied.is_empty() {
            self.backend.rollback(tx).await;
            return Ok(outcomes
                .into_iter()
                .map(|o| o.expect("every order decided"))
                .collect());
        }

        let canonical: Vec<String> = applied
            .iter()
            .map(|(_, order, _)| order.canonical_lines())
            .collect();
        let mut claims: Vec<OrderClaim<'_>> = applied
            .iter()
            .zip(&canonical)
            .map(|((_, order, _), lines)| OrderClaim {
                order_id: order.order_id(),
                lines,
                line_count: order.lines().len(),
            })
            .collect();
        // Id order, so two batches claiming overlapping ids cannot wait for each other in a
        // cycle.
        claims.sort_by(|a, b| a.order_id.as_str().cmp(b.order_id.as_str()));
        match self.backend.claim_orders(&mut tx, &claims).await {
            Ok(()) => {}
            Err(fault) if fault.kind() == FaultKind::KeyTaken => {
                return self
                    .abandon(tx, AttemptError::Retry(RetryCause::IdempotencyRace))
                    .await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        }

        let planned: Vec<PlannedLine<'_>> = applied
            .iter()
            .flat_map(|(_, order, after)| {
                order
                    .lines()
                    .iter()
                    .zip(after)
                    .map(|((sku, units), (row_stock_after, stock_after))| PlannedLine {
                        line: LineWrite {
                            sku,
                            quantity: *units,
                            reason: LineReason::Order,
                            reference: order.order_id().as_str(),
                        },
                        row_stock_after: *row_stock_after,
                        stock_after: *stock_after,
                    })
            })
            .collect();
        let written = match self.backend.write_lines(&mut tx, &planned).await {
            Ok(written) if written.len() == planned.len() => written,
            Ok(_) => {
                let error = DeductError::Internal {
                    context: "a batch of orders wrote a different number of lines than planned",
                    source: None,
                };
                return self.abandon(tx, error.into()).await;
            }
            Err(fault) => return self.abandon(tx, fault.definite()).await,
        };

        let first_lines = applied[0].1.lines().len();
        let witness_ids: Vec<i64> = written[..first_lines].iter().map(|w| w.ledger_id).collect();
        self.commit_order_batch(tx, &applied, &witness_ids, &skus, exposure, deadline)
            .await?;
        let mut written = written.into_iter();
        for (index, order, _) in applied {
            let lines = order
                .lines()
                .iter()
                .map(|(sku, units)| {
                    let line = written.next().expect("one write per planned line");
                    OrderLineReceipt {
                        sku: sku.clone(),
                        quantity: *units,
                        remaining: line.stock_after,
                        ledger_id: line.ledger_id,
                    }
                })
                .collect();
            outcomes[index] = Some(Outcome::Placed(OrderReceipt {
                order_id: order.order_id().clone(),
                lines,
                replayed: false,
                attempts: 1,
            }));
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.expect("every order decided"))
            .collect())
    }

    /// Commits the batch; a lost answer is resolved by the first applied order (its id, and
    /// `witness_ids`, the ledger rows this batch wrote for it), once no transaction holds any
    /// of the batch's rows.
    async fn commit_order_batch(
        &self,
        tx: B::Tx,
        applied: &[Applied<'_>],
        witness_ids: &[i64],
        skus: &[&SkuId],
        exposure: &Exposure,
        deadline: Instant,
    ) -> Result<(), AttemptError> {
        exposure.sent();
        let answered = self.backend.commit(tx).await;
        #[cfg(feature = "test-utils")]
        let answered = {
            let keys: Vec<IdempotencyKey> = applied.iter().map(|(_, order, _)| order.outcome_key()).collect();
            let keys: Vec<&IdempotencyKey> = keys.iter().collect();
            self.lose_answer_if_asked(&keys, answered)
        };
        match answered {
            Ok(()) => {
                exposure.settled();
                Ok(())
            }
            Err(fault) if fault.is_ambiguous() => {
                let (_, witness, _) = applied.first().expect("a committed batch applied an order");
                tracing::warn!(orders = applied.len(), %fault, "answer lost after a batch COMMIT; resolving by the first order's id");
                self.resolve_by(exposure, deadline, Some(witness.outcome_key()), fault, || async {
                    // The id could in principle have been claimed by another placement
                    // after this batch aborted: only this batch's own rows count.
                    let found = self
                        .backend
                        .settle_and_find_order(skus, witness.order_id())
                        .await?;
                    Ok(found.filter(|order| {
                        let mut ids: Vec<i64> = order.entries.iter().map(|entry| entry.id).collect();
                        ids.sort_unstable();
                        let mut ours = witness_ids.to_vec();
                        ours.sort_unstable();
                        ids == ours
                    }))
                })
                .await
                .map(|_| ())
            }
            Err(fault) => {
                exposure.settled();
                Err(fault.definite())
            }
        }
    }
}
