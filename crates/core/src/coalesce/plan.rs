//! Deciding a batch: which queued requests fit, in FIFO order, given the locked stock.
//! Shared by every adapter so the rule is written once.

use std::collections::HashMap;

use crate::domain::{IdempotencyKey, LedgerEntry, Quantity, Receipt, SkuId};
use crate::error::DeductError;
use crate::model::replay;

/// One queued deduction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchItem {
    /// Units requested.
    pub quantity: Quantity,
    /// The request's key: the client's, or one the engine generated.
    pub idempotency_key: IdempotencyKey,
    /// True when the client sent the key, so it may already be in the ledger. A generated
    /// key is new by construction and needs no lookup.
    pub client_key: bool,
}

/// A ledger row the batch will insert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLedgerRow {
    /// Units deducted (positive; stored as a negative delta).
    pub quantity: i64,
    /// Stock right after this request, within the batch.
    pub stock_after: i64,
    /// The request's key.
    pub idempotency_key: IdempotencyKey,
}

#[derive(Debug, Clone)]
enum Planned {
    /// Applied as new ledger row `row`.
    Apply { row: usize },
    /// A repeat of an idempotency key applied earlier in this same batch (row `row`).
    ReplayInBatch { row: usize },
    /// Decided without writing: a replay of a committed key, or a refusal.
    Settled(Result<Receipt, SettledError>),
}

#[derive(Debug, Clone, Copy)]
enum SettledError {
    NotFound,
    Insufficient { requested: i64, available: i64 },
    KeyReused,
}

/// The decision for one batch. Requests are taken strictly in queue order: each one is
/// applied if it fits in the stock left by the requests before it, so a large request that
/// does not fit is refused and smaller ones behind it may still succeed.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    outcomes: Vec<Planned>,
    /// The ledger rows to insert, in order.
    pub new_rows: Vec<NewLedgerRow>,
    /// Stock before the batch.
    pub stock_before: i64,
    /// Stock after the batch; the adapter writes exactly this.
    pub stock_after: i64,
}

impl BatchPlan {
    /// Plans `items` against `stock` (read under the row lock; `None` when the SKU does not
    /// exist). `prior` holds ledger rows already committed for any of the items' idempotency
    /// keys. As for single requests, a used key is answered before the SKU is looked at.
    pub fn new(sku: &SkuId, stock: Option<i64>, items: &[BatchItem], prior: &[LedgerEntry]) -> Self {
        let exists = stock.is_some();
        let stock = stock.unwrap_or(0);
        let prior_by_key: HashMap<&str, &LedgerEntry> = prior
            .iter()
            .filter_map(|e| e.idempotency_key.as_deref().map(|k| (k, e)))
            .collect();
        let mut applied_by_key: HashMap<&str, usize> = HashMap::new();
        let mut outcomes = Vec::with_capacity(items.len());
        let mut new_rows: Vec<NewLedgerRow> = Vec::with_capacity(items.len());
        let mut left = stock;
        for item in items {
            let key = item.idempotency_key.as_str();
            if let Some(entry) = prior_by_key.get(key) {
                let settled = replay(entry, sku, item.quantity, 1).map_err(|_| SettledError::KeyReused);
                outcomes.push(Planned::Settled(settled));
                continue;
            }
            if let Some(&row) = applied_by_key.get(key) {
                if new_rows[row].quantity == item.quantity.get() {
                    outcomes.push(Planned::ReplayInBatch { row });
                } else {
                    outcomes.push(Planned::Settled(Err(SettledError::KeyReused)));
                }
                continue;
            }
            let requested = item.quantity.get();
            if !exists {
                outcomes.push(Planned::Settled(Err(SettledError::NotFound)));
                continue;
            }
            if requested > left {
                outcomes.push(Planned::Settled(Err(SettledError::Insufficient {
                    requested,
                    available: left,
                })));
                continue;
            }
            left -= requested;
            let row = new_rows.len();
            new_rows.push(NewLedgerRow {
                quantity: requested,
                stock_after: left,
                idempotency_key: item.idempotency_key.clone(),
            });
            applied_by_key.insert(key, row);
            outcomes.push(Planned::Apply { row });
        }
        debug_assert!(left >= 0);
        debug_assert_eq!(stock - left, new_rows.iter().map(|r| r.quantity).sum::<i64>());
        Self {
            outcomes,
            new_rows,
            stock_before: stock,
            stock_after: left,
        }
    }

    /// For a SKU with `Sharded` bucket stock: reports each new row's `stock_after` (and so
    /// each receipt's `remaining`) as an estimate of the SKU's total, the row's stock shifted
    /// by `offset` (the snapshot total minus the locked row stock), never below zero. The row
    /// itself is still written with [`BatchPlan::stock_after`]. See [`crate::sharding`].
    pub fn report_total_stock(&mut self, offset: i64) {
        for row in &mut self.new_rows {
            row.stock_after = (row.stock_after + offset).max(0);
        }
    }

    /// The keys of the rows the batch inserts: after a lost COMMIT, finding any of them
    /// proves the batch committed.
    pub fn new_keys(&self) -> Vec<&IdempotencyKey> {
        self.new_rows.iter().map(|row| &row.idempotency_key).collect()
    }

    /// True when some item replays a key committed before the batch.
    pub fn has_prior_replays(&self) -> bool {
        self.outcomes
            .iter()
            .any(|planned| matches!(planned, Planned::Settled(Ok(_))))
    }

    /// True when the plan refuses an item that carries a client's key. A key may have been
    /// committed before, and a refusal is final, so such a plan must be made with the keys
    /// looked up (a used key is answered before the SKU is looked at).
    pub fn refuses_client_key(&self, items: &[BatchItem]) -> bool {
        self.outcomes.iter().zip(items).any(|(planned, item)| {
            item.client_key
                && matches!(
                    planned,
                    Planned::Settled(Err(SettledError::NotFound | SettledError::Insufficient { .. }))
                )
        })
    }

    /// Units the batch deducts in total.
    pub fn total_quantity(&self) -> i64 {
        self.stock_before - self.stock_after
    }

    /// Turns the plan into one result per item once the rows are committed. `ledger_ids[i]`
    /// is the id of `new_rows[i]`.
    pub fn into_results(
        self,
        sku: &SkuId,
        items: &[BatchItem],
        ledger_ids: &[i64],
        lock_wait_us: u64,
    ) -> Vec<Result<Receipt, DeductError>> {
        assert_eq!(ledger_ids.len(), self.new_rows.len(), "one ledger id per new row");
        self.outcomes
            .into_iter()
            .zip(items)
            .map(|(planned, item)| {
                let receipt = |row: usize, replayed: bool| Receipt {
                    sku: sku.clone(),
                    quantity: item.quantity,
                    remaining: self.new_rows[row].stock_after,
                    ledger_id: ledger_ids[row],
                    attempts: 1,
                    replayed,
                    lock_wait_us,
                    idempotency_key: item.idempotency_key.clone(),
                };
                match planned {
                    Planned::Apply { row } => Ok(receipt(row, false)),
                    Planned::ReplayInBatch { row } => Ok(receipt(row, true)),
                    Planned::Settled(Ok(replayed)) => Ok(replayed),
                    Planned::Settled(Err(SettledError::KeyReused)) => Err(DeductError::IdempotencyKeyReused),
                    Planned::Settled(Err(SettledError::NotFound)) => Err(DeductError::NotFound),
                    Planned::Settled(Err(SettledError::Insufficient { requested, available })) => {
                        Err(DeductError::InsufficientStock { requested, available })
                    }
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(q: i64, key: Option<&str>) -> BatchItem {
        BatchItem {
            quantity: Quantity::new(q).unwrap(),
            idempotency_key: key.map_or_else(IdempotencyKey::generate, |k| IdempotencyKey::parse(k).unwrap()),
            client_key: key.is_some(),
        }
    }

    #[test]
    fn fifo_partial_fulfilment_lets_smaller_later_requests_fit() {
        let sku = SkuId::parse("s").unwrap();
        let items = [item(3, None), item(5, None), item(2, None), item(1, None)];
        let plan = BatchPlan::new(&sku, Some(6), &items, &[]);
        assert_eq!(plan.stock_after, 0);
        assert_eq!(plan.total_quantity(), 6);
        let results = plan.into_results(&sku, &items, &[10, 11, 12], 0);
        assert_eq!(results[0].as_ref().unwrap().remaining, 3);
        assert!(matches!(
            results[1],
            Err(DeductError::InsufficientStock {
                requested: 5,
                available: 3
            })
        ));
        assert_eq!(results[2].as_ref().unwrap().remaining, 1);
        assert_eq!(results[3].as_ref().unwrap().ledger_id, 12);
    }

    #[test]
    fn duplicate_keys_inside_one_batch_apply_once() {
        let sku = SkuId::parse("s").unwrap();
        let items = [item(2, Some("k")), item(2, Some("k")), item(3, Some("k"))];
        let plan = BatchPlan::new(&sku, Some(10), &items, &[]);
        assert_eq!(plan.new_rows.len(), 1);
        assert_eq!(plan.stock_after, 8);
        let results = plan.into_results(&sku, &items, &[7], 0);
        let first = results[0].as_ref().unwrap();
        let second = results[1].as_ref().unwrap();
        assert!(!first.replayed && second.replayed);
        assert_eq!(first.ledger_id, second.ledger_id);
        assert!(matches!(results[2], Err(DeductError::IdempotencyKeyReused)));
    }
}
