//! The committed rows and the plain reads over them.
//!
//! Reads see only what committed: a transaction's writes live in its own [`Changes`] until
//! [`Tables::apply`], as a reader under WAL never sees a writer's uncommitted rows.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};

use crate::domain::{
    AuditCheckpoint, HoldCheck, HoldId, HoldState, LedgerEntry, LedgerPage, LedgerReason, OrderCheck, SkuId,
    SkuSnapshot, StockLevel,
};
use crate::engine::{StoredHold, StoredOrder};

/// One SKU row.
#[derive(Debug, Clone)]
pub(crate) struct SkuRow {
    pub(crate) sku: SkuId,
    pub(crate) stock: i64,
    pub(crate) reserved: i64,
    pub(crate) initial_stock: i64,
    pub(crate) version: i64,
}

/// One claimed order id.
#[derive(Debug, Clone)]
pub(crate) struct OrderRow {
    pub(crate) lines: String,
    pub(crate) line_count: i64,
}

/// One claimed hold id.
#[derive(Debug, Clone)]
pub(crate) struct HoldRow {
    pub(crate) hold_id: HoldId,
    pub(crate) lines: String,
    pub(crate) line_count: i64,
    pub(crate) state: HoldState,
    pub(crate) expires_at: DateTime<Utc>,
}

impl HoldRow {
    /// Active and past `expires_at` at `now` (the store's clock).
    pub(crate) fn due(&self, now: DateTime<Utc>) -> bool {
        self.state == HoldState::Active && self.expires_at <= now
    }
}

/// What one transaction wrote, applied to [`Tables`] only on commit.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    pub(crate) skus: HashMap<String, SkuRow>,
    pub(crate) ledger: Vec<LedgerEntry>,
    pub(crate) orders: Vec<(String, OrderRow)>,
    pub(crate) holds: HashMap<String, HoldRow>,
}

/// The committed database: rows and the indexes the SQL adapters get from theirs.
#[derive(Debug, Default)]
pub(crate) struct Tables {
    pub(crate) skus: BTreeMap<String, SkuRow>,
    /// Ledger row `id` is at index `id - 1`: ids only grow and are never reused.
    pub(crate) ledger: Vec<LedgerEntry>,
    /// The unique index on `idempotency_key`.
    pub(crate) by_key: HashMap<String, usize>,
    pub(crate) by_sku: HashMap<String, Vec<usize>>,
    pub(crate) by_reference: HashMap<String, Vec<usize>>,
    pub(crate) orders: BTreeMap<String, OrderRow>,
    pub(crate) holds: BTreeMap<String, HoldRow>,
    /// The incremental audit's checkpoints, by SKU.
    pub(crate) checkpoints: HashMap<String, AuditCheckpoint>,
}

/// The hold-related ledger reasons (a hold's rows).
pub(crate) fn is_hold_reason(reason: LedgerReason) -> bool {
    matches!(
        reason,
        LedgerReason::Reserve | LedgerReason::Confirm | LedgerReason::Release | LedgerReason::Expire
    )
}

impl Tables {
    /// Commits a transaction's changes.
    pub(crate) fn apply(&mut self, changes: Changes) {
        self.skus.extend(changes.skus);
        for entry in changes.ledger {
            let index = self.ledger.len();
            debug_assert_eq!(usize::try_from(entry.id).ok(), Some(index + 1));
            if let Some(key) = &entry.idempotency_key {
                self.by_key.insert(key.clone(), index);
            }
            self.by_sku
                .entry(entry.sku.as_str().to_owned())
                .or_default()
                .push(index);
            if let Some(reference) = &entry.reference {
                self.by_reference
                    .entry(reference.clone())
                    .or_default()
                    .push(index);
            }
            self.ledger.push(entry);
        }
        self.orders.extend(changes.orders);
        self.holds.extend(changes.holds);
    }

    /// The committed ledger row of `key`.
    pub(crate) fn by_key(&self, key: &str) -> Option<&LedgerEntry> {
        self.by_key.get(key).map(|&i| &self.ledger[i])
    }

    /// The committed ledger rows referring to `reference` with a reason `keep` accepts.
    pub(crate) fn referring(
        &self,
        reference: &str,
        keep: impl Fn(LedgerReason) -> bool,
    ) -> impl Iterator<Item = &LedgerEntry> {
        self.by_reference
            .get(reference)
            .into_iter()
            .flatten()
            .map(|&i| &self.ledger[i])
            .filter(move |e| keep(e.reason))
    }

    /// Units active holds past expiry reserve on `sku` at `now`: reported back as stock.
    fn due_units(&self, sku: &str, now: DateTime<Utc>) -> i64 {
        self.holds
            .values()
            .filter(|h| h.due(now))
            .flat_map(|h| self.referring(h.hold_id.as_str(), |r| r == LedgerReason::Reserve))
            .filter(|e| e.sku.as_str() == sku)
            .map(|e| -e.delta)
            .sum()
    }

    pub(crate) fn stock(&self, sku: &SkuId, now: DateTime<Utc>) -> Option<StockLevel> {
        let row = self.skus.get(sku.as_str())?;
        let due = self.due_units(sku.as_str(), now);
        Some(StockLevel {
            sku: row.sku.clone(),
            stock: row.stock + due,
            reserved: row.reserved - due,
            initial_stock: row.initial_stock,
            version: row.version,
        })
    }

    pub(crate) fn ledger_page(&self, sku: &SkuId, page: LedgerPage) -> Vec<LedgerEntry> {
        let after = page.after_id.unwrap_or(0);
        self.by_sku
            .get(sku.as_str())
            .into_iter()
            .flatten()
            .map(|&i| &self.ledger[i])
            .filter(|e| e.id > after)
            .take(usize::try_from(page.limit).unwrap_or(usize::MAX))
            .cloned()
            .collect()
    }

    pub(crate) fn snapshot(&self) -> Vec<SkuSnapshot> {
        self.skus
            .values()
            .map(|row| {
                let rows = self
                    .by_sku
                    .get(row.sku.as_str())
                    .map(Vec::as_slice)
                    .unwrap_or(&[]);
                SkuSnapshot {
                    sku: row.sku.clone(),
                    initial_stock: row.initial_stock,
                    stock: row.stock,
                    ledger_delta_sum: rows.iter().map(|&i| self.ledger[i].delta).sum(),
                    ledger_rows: i64::try_from(rows.len()).unwrap_or(i64::MAX),
                }
            })
            .collect()
    }

    pub(crate) fn order_check(&self) -> OrderCheck {
        let count = |reference: &str| {
            let n = self.referring(reference, |r| r == LedgerReason::Order).count();
            i64::try_from(n).unwrap_or(i64::MAX)
        };
        let mut rows: Vec<(String, i64, i64)> = self
            .orders
            .iter()
            .map(|(id, order)| (id.clone(), order.line_count, count(id)))
            .filter(|(_, lines, rows)| lines != rows)
            .collect();
        // Order rows whose reference no order claimed.
        for (reference, _) in self.by_reference.iter() {
            if !self.orders.contains_key(reference) && count(reference) > 0 {
                rows.push((reference.clone(), 0, count(reference)));
            }
        }
        rows.sort();
        OrderCheck::from_stored(i64::try_from(self.orders.len()).unwrap_or(i64::MAX), rows)
    }

    pub(crate) fn hold_check(&self) -> HoldCheck {
        let holds = self
            .holds
            .values()
            .map(|hold| {
                let mut row = (
                    hold.hold_id.as_str().to_owned(),
                    hold.state.as_str().to_owned(),
                    hold.line_count,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                    0,
                );
                for e in self.referring(hold.hold_id.as_str(), is_hold_reason) {
                    match e.reason {
                        LedgerReason::Reserve => {
                            row.3 += 1;
                            row.7 -= e.delta;
                        }
                        LedgerReason::Confirm => {
                            row.4 += 1;
                            row.9 += e.delta;
                        }
                        LedgerReason::Release => {
                            row.5 += 1;
                            row.8 += e.delta;
                        }
                        _ => {
                            row.6 += 1;
                            row.8 += e.delta;
                        }
                    }
                }
                row
            })
            .collect();
        let mut held: HashMap<&str, i64> = HashMap::new();
        for hold in self.holds.values().filter(|h| h.state == HoldState::Active) {
            for e in self.referring(hold.hold_id.as_str(), |r| r == LedgerReason::Reserve) {
                *held.entry(e.sku.as_str()).or_default() -= e.delta;
            }
        }
        let mismatches = self
            .skus
            .values()
            .map(|row| {
                let active = held.get(row.sku.as_str()).copied().unwrap_or(0);
                (row.sku.as_str().to_owned(), row.reserved, active)
            })
            .filter(|(_, reserved, active)| reserved != active || *reserved < 0)
            .collect();
        HoldCheck::from_stored(holds, mismatches)
    }

    pub(crate) fn find_order(&self, order_id: &str) -> Option<StoredOrder> {
        let order = self.orders.get(order_id)?;
        Some(StoredOrder {
            lines: order.lines.clone(),
            entries: self
                .referring(order_id, |r| r == LedgerReason::Order)
                .cloned()
                .collect(),
        })
    }

    pub(crate) fn find_hold(&self, hold_id: &str, now: DateTime<Utc>) -> Option<StoredHold> {
        let hold = self.holds.get(hold_id)?;
        Some(stored_hold(
            hold,
            self.referring(hold_id, is_hold_reason).cloned().collect(),
            now,
        ))
    }

    pub(crate) fn has_due_holds(&self, sku: &SkuId, now: DateTime<Utc>) -> bool {
        self.due_units(sku.as_str(), now) > 0
    }
}

/// A hold as the engine reads it.
pub(crate) fn stored_hold(hold: &HoldRow, entries: Vec<LedgerEntry>, now: DateTime<Utc>) -> StoredHold {
    StoredHold {
        hold_id: hold.hold_id.clone(),
        lines: hold.lines.clone(),
        state: hold.state,
        expires_at: hold.expires_at,
        due: hold.due(now),
        entries,
    }
}
