//! A transaction: the one write lock, and a working copy of what it changed.
//!
//! Its writes go to [`Changes`], read back through [`MemoryTx`]'s own lookups, and reach the
//! committed [`Tables`] only at [`MemoryTx::commit`]. Dropping it (or rolling back) throws
//! the copy away and releases the lock, so nothing half-written is ever visible.

use std::sync::{Arc, Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use tokio::sync::OwnedMutexGuard;

use super::tables::{Changes, HoldRow, OrderRow, SkuRow, Tables, is_hold_reason, stored_hold};
use crate::domain::{HoldId, HoldState, LedgerEntry, LedgerReason, OrderId, SkuId};
use crate::engine::{Fault, FaultKind, StoredHold, Written};

/// An open transaction on a [`super::MemoryBackend`]: it holds the write lock until it
/// ends, as SQLite's `BEGIN IMMEDIATE` does.
#[derive(Debug)]
pub struct MemoryTx {
    tables: Arc<Mutex<Tables>>,
    changes: Changes,
    _write: OwnedMutexGuard<()>,
}

/// Locks the committed rows. Never held across an await; a panic while held would be a bug
/// in this module, so a poisoned lock is taken over rather than failing every later call.
pub(crate) fn committed(tables: &Mutex<Tables>) -> MutexGuard<'_, Tables> {
    tables.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A fault as a database constraint would raise it.
fn violation(kind: FaultKind, context: &'static str) -> Fault {
    Fault::bare(kind, context)
}

/// A ledger row before its id is known.
pub(crate) struct NewRow<'a> {
    pub(crate) sku: &'a SkuId,
    pub(crate) delta: i64,
    pub(crate) stock_after: i64,
    pub(crate) reason: LedgerReason,
    pub(crate) key: Option<&'a str>,
    pub(crate) reference: Option<&'a str>,
    pub(crate) adjustment: Option<crate::domain::AdjustmentKind>,
}

impl MemoryTx {
    pub(crate) fn new(tables: Arc<Mutex<Tables>>, write: OwnedMutexGuard<()>) -> Self {
        Self {
            tables,
            changes: Changes::default(),
            _write: write,
        }
    }

    /// Applies the working copy.
    pub(crate) fn commit(self) {
        let MemoryTx {
            tables,
            changes,
            _write,
        } = self;
        committed(&tables).apply(changes);
    }

    /// The SKU row as this transaction sees it.
    pub(crate) fn row(&self, sku: &SkuId) -> Option<SkuRow> {
        if let Some(row) = self.changes.skus.get(sku.as_str()) {
            return Some(row.clone());
        }
        committed(&self.tables).skus.get(sku.as_str()).cloned()
    }

    /// Writes the row's stock and `reserved` (bumping its version), checking what the
    /// schema's CHECK constraints check.
    pub(crate) fn set_row(&mut self, mut row: SkuRow, stock: i64, reserved_delta: i64) -> Result<(), Fault> {
        let reserved = row.reserved + reserved_delta;
        if stock < 0 || reserved < 0 {
            return Err(violation(FaultKind::CheckViolation, "writing the row"));
        }
        row.stock = stock;
        row.reserved = reserved;
        row.version += 1;
        self.changes.skus.insert(row.sku.as_str().to_owned(), row);
        Ok(())
    }

    /// Sets the locked row's stock; the SKU must exist.
    pub(crate) fn set_stock(&mut self, sku: &SkuId, stock: i64, reserved_delta: i64) -> Result<(), Fault> {
        let row = self
            .row(sku)
            .ok_or_else(|| violation(FaultKind::Other, "writing a row that does not exist"))?;
        self.set_row(row, stock, reserved_delta)
    }

    /// Appends a ledger row, enforcing the unique key.
    pub(crate) fn insert(&mut self, new: NewRow<'_>) -> Result<Written, Fault> {
        if new.stock_after < 0 {
            return Err(violation(FaultKind::CheckViolation, "writing the ledger row"));
        }
        let committed_rows = {
            let tables = committed(&self.tables);
            if let Some(key) = new.key
                && tables.by_key.contains_key(key)
            {
                return Err(violation(FaultKind::KeyTaken, "writing the ledger row"));
            }
            tables.ledger.len()
        };
        if let Some(key) = new.key
            && self
                .changes
                .ledger
                .iter()
                .any(|e| e.idempotency_key.as_deref() == Some(key))
        {
            return Err(violation(FaultKind::KeyTaken, "writing the ledger row"));
        }
        let id = i64::try_from(committed_rows + self.changes.ledger.len() + 1).unwrap_or(i64::MAX);
        self.changes.ledger.push(LedgerEntry {
            id,
            sku: new.sku.clone(),
            delta: new.delta,
            stock_after: new.stock_after,
            reason: new.reason,
            idempotency_key: new.key.map(str::to_owned),
            created_at: Utc::now(),
            reference: new.reference.map(str::to_owned),
            adjustment: new.adjustment,
        });
        Ok(Written {
            ledger_id: id,
            stock_after: new.stock_after,
        })
    }

    /// Claims an order id; `KeyTaken` when claimed before.
    pub(crate) fn claim_order(
        &mut self,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> Result<(), Fault> {
        let id = order_id.as_str();
        let taken = committed(&self.tables).orders.contains_key(id)
            || self.changes.orders.iter().any(|(claimed, _)| claimed == id);
        if taken {
            return Err(violation(FaultKind::KeyTaken, "claiming an order id"));
        }
        let row = OrderRow {
            lines: lines.to_owned(),
            line_count: i64::try_from(line_count).unwrap_or(i64::MAX),
        };
        self.changes.orders.push((id.to_owned(), row));
        Ok(())
    }

    /// Claims a hold id, active until `ttl_s` from now; `KeyTaken` when claimed before.
    pub(crate) fn claim_hold(
        &mut self,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> Result<DateTime<Utc>, Fault> {
        let id = hold_id.as_str();
        if committed(&self.tables).holds.contains_key(id) || self.changes.holds.contains_key(id) {
            return Err(violation(FaultKind::KeyTaken, "claiming a hold id"));
        }
        let expires_at = Utc::now() + chrono::Duration::seconds(i64::from(ttl_s));
        self.changes.holds.insert(
            id.to_owned(),
            HoldRow {
                hold_id: hold_id.clone(),
                lines: lines.to_owned(),
                line_count: i64::try_from(line_count).unwrap_or(i64::MAX),
                state: HoldState::Active,
                expires_at,
            },
        );
        Ok(expires_at)
    }

    /// Every hold as this transaction sees it, with its ledger rows.
    fn holds_where(
        &self,
        keep: impl Fn(&HoldRow, &[LedgerEntry]) -> bool,
    ) -> Vec<(HoldRow, Vec<LedgerEntry>)> {
        let tables = committed(&self.tables);
        let mut ids: Vec<&String> = tables.holds.keys().collect();
        ids.extend(
            self.changes
                .holds
                .keys()
                .filter(|id| !tables.holds.contains_key(*id)),
        );
        ids.into_iter()
            .filter_map(|id| {
                let hold = self.changes.holds.get(id).or_else(|| tables.holds.get(id))?;
                let mut entries: Vec<LedgerEntry> = tables.referring(id, is_hold_reason).cloned().collect();
                entries.extend(
                    self.changes
                        .ledger
                        .iter()
                        .filter(|e| e.reference.as_deref() == Some(id.as_str()) && is_hold_reason(e.reason))
                        .cloned(),
                );
                keep(hold, &entries).then(|| (hold.clone(), entries))
            })
            .collect()
    }

    /// The hold, read under this transaction's lock.
    pub(crate) fn hold(&self, hold_id: &HoldId) -> Option<StoredHold> {
        let now = Utc::now();
        self.holds_where(|hold, _| hold.hold_id == *hold_id)
            .pop()
            .map(|(hold, entries)| stored_hold(&hold, entries, now))
    }

    /// Up to `limit` due holds (with a `reserve` row on `sku`, if given), oldest expiry first.
    pub(crate) fn due_holds(&self, sku: Option<&SkuId>, limit: u32) -> Vec<StoredHold> {
        let now = Utc::now();
        let mut due = self.holds_where(|hold, entries| {
            hold.due(now)
                && sku.is_none_or(|sku| {
                    entries
                        .iter()
                        .any(|e| e.reason == LedgerReason::Reserve && e.sku == *sku)
                })
        });
        due.sort_by(|a, b| {
            (a.0.expires_at, a.0.hold_id.as_str()).cmp(&(b.0.expires_at, b.0.hold_id.as_str()))
        });
        due.into_iter()
            .take(usize::try_from(limit).unwrap_or(usize::MAX))
            .map(|(hold, entries)| stored_hold(&hold, entries, now))
            .collect()
    }

    /// Sets a hold's state.
    pub(crate) fn set_hold_state(&mut self, hold_id: &HoldId, state: HoldState) -> Result<(), Fault> {
        let mut hold = self
            .holds_where(|hold, _| hold.hold_id == *hold_id)
            .pop()
            .ok_or_else(|| violation(FaultKind::Other, "resolving a hold that does not exist"))?
            .0;
        hold.state = state;
        self.changes.holds.insert(hold_id.as_str().to_owned(), hold);
        Ok(())
    }
}
