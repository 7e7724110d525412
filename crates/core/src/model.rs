//! The in-memory reference model: the specification of store semantics, written as plainly
//! as possible. Property tests run the same operations against it and a real database and
//! compare every result. It is not a store for production use and never stands in for a
//! database in a test of an adapter.

mod holds;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::Utc;

use crate::domain::{
    AdjustReceipt, AdjustRequest, AdjustmentKind, Capabilities, ConfirmLines, DeductRequest, HoldId,
    HoldReceipt, HoldRequest, IdempotencyKey, LedgerEntry, LedgerPage, LedgerReason, OrderId,
    OrderLineReceipt, OrderReceipt, OrderRequest, PoolStatus, Quantity, Receipt, RestockReceipt,
    RestockRequest, STOCK_MAX, ShortLine, SkuId, SkuSnapshot, StockLevel, Strategy, check_stock_level,
    line_mismatches,
};
use crate::error::{DeductError, InvalidInput};
use crate::store::InventoryStore;

/// A ledger row the model is about to append.
struct NewRow<'a> {
    sku: &'a SkuId,
    delta: i64,
    stock_after: i64,
    reason: LedgerReason,
    idempotency_key: Option<&'a IdempotencyKey>,
    reference: Option<&'a str>,
    adjustment: Option<AdjustmentKind>,
}

#[derive(Debug, Clone)]
struct SkuState {
    initial_stock: i64,
    stock: i64,
    /// Units set aside by active holds.
    reserved: i64,
    version: i64,
}

/// Sequential semantics of every strategy (they differ only in how they wait).
#[derive(Debug, Default, Clone)]
pub struct ReferenceModel {
    skus: BTreeMap<SkuId, SkuState>,
    ledger: Vec<LedgerEntry>,
    by_key: HashMap<String, usize>,
    /// Each order's canonical lines and its receipt.
    orders: HashMap<OrderId, (String, OrderReceipt)>,
    /// Each hold's canonical lines and how it stands.
    holds: HashMap<HoldId, holds::ModelHold>,
}

impl ReferenceModel {
    /// An empty model.
    pub fn new() -> Self {
        Self::default()
    }

    /// See [`InventoryStore::create_sku`].
    pub fn create_sku(&mut self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        check_stock_level(initial_stock)?;
        if self.skus.contains_key(sku) {
            return Err(DeductError::AlreadyExists);
        }
        self.skus.insert(
            sku.clone(),
            SkuState {
                initial_stock,
                stock: initial_stock,
                reserved: 0,
                version: 0,
            },
        );
        Ok(StockLevel {
            sku: sku.clone(),
            stock: initial_stock,
            reserved: 0,
            initial_stock,
            version: 0,
        })
    }

    /// See [`InventoryStore::restock`].
    pub fn restock(&mut self, request: &RestockRequest) -> Result<RestockReceipt, DeductError> {
        let RestockRequest { sku, quantity, .. } = request;
        if let Some(key) = &request.idempotency_key
            && let Some(&index) = self.by_key.get(key.as_str())
        {
            return replay_restock(&self.ledger[index], sku, *quantity);
        }
        let state = self.skus.get_mut(sku).ok_or(DeductError::NotFound)?;
        let stock_after = state.stock + quantity.get();
        if stock_after > STOCK_MAX {
            return Err(InvalidInput::StockOutOfRange {
                given: stock_after,
                max: STOCK_MAX,
            }
            .into());
        }
        state.stock = stock_after;
        let key = request
            .idempotency_key
            .clone()
            .unwrap_or_else(IdempotencyKey::generate);
        let ledger_id = self.push_ledger(sku, quantity.get(), stock_after, LedgerReason::Restock, &key);
        Ok(RestockReceipt {
            sku: sku.clone(),
            quantity: *quantity,
            stock_after,
            ledger_id,
            replayed: false,
            idempotency_key: key,
        })
    }

    /// See [`InventoryStore::deduct`]. The strategy does not change the sequential result.
    pub fn deduct(&mut self, request: &DeductRequest) -> Result<Receipt, DeductError> {
        if let Some(key) = &request.idempotency_key
            && let Some(&index) = self.by_key.get(key.as_str())
        {
            return replay(&self.ledger[index], &request.sku, request.quantity, 1);
        }
        let state = self.skus.get_mut(&request.sku).ok_or(DeductError::NotFound)?;
        if let Some(expected) = request.expected_version
            && expected != state.version
        {
            return Err(DeductError::VersionMismatch {
                expected,
                current: state.version,
            });
        }
        let requested = request.quantity.get();
        if state.stock < requested {
            return Err(DeductError::InsufficientStock {
                requested,
                available: state.stock,
            });
        }
        state.stock -= requested;
        state.version += 1;
        let remaining = state.stock;
        let key = request
            .idempotency_key
            .clone()
            .unwrap_or_else(IdempotencyKey::generate);
        let ledger_id = self.push_ledger(&request.sku, -requested, remaining, LedgerReason::Deduct, &key);
        Ok(Receipt {
            sku: request.sku.clone(),
            quantity: request.quantity,
            remaining,
            ledger_id,
            attempts: 1,
            replayed: false,
            lock_wait_us: 0,
            idempotency_key: key,
        })
    }

    /// See [`InventoryStore::place_order`]: all lines or none, each SKU's lines summed; a
    /// replay answers the first receipt, other lines under the same id are a mismatch.
    pub fn place_order(&mut self, order: &OrderRequest) -> Result<OrderReceipt, DeductError> {
        if let Some((stored, receipt)) = self.orders.get(order.order_id()) {
            let mismatches = line_mismatches(stored, order.lines());
            if !mismatches.is_empty() {
                return Err(DeductError::OrderMismatch { mismatches });
            }
            return Ok(OrderReceipt {
                replayed: true,
                ..receipt.clone()
            });
        }
        let missing: Vec<SkuId> = order
            .lines()
            .iter()
            .filter(|(sku, _)| !self.skus.contains_key(sku))
            .map(|(sku, _)| sku.clone())
            .collect();
        if !missing.is_empty() {
            return Err(DeductError::SkusNotFound { skus: missing });
        }
        let short: Vec<ShortLine> = order
            .lines()
            .iter()
            .filter_map(|(sku, units)| {
                let available = self.skus[sku].stock;
                (available < *units).then(|| ShortLine {
                    sku: sku.clone(),
                    requested: *units,
                    available,
                })
            })
            .collect();
        if !short.is_empty() {
            return Err(DeductError::OrderShort { lines: short });
        }
        let mut lines = Vec::with_capacity(order.lines().len());
        for (sku, units) in order.lines() {
            let state = self.skus.get_mut(sku).expect("checked above");
            state.stock -= units;
            state.version += 1;
            let remaining = state.stock;
            let ledger_id = self.push_entry(NewRow {
                sku,
                delta: -units,
                stock_after: remaining,
                reason: LedgerReason::Order,
                idempotency_key: None,
                reference: Some(order.order_id().as_str()),
                adjustment: None,
            });
            lines.push(OrderLineReceipt {
                sku: sku.clone(),
                quantity: *units,
                remaining,
                ledger_id,
            });
        }
        let receipt = OrderReceipt {
            order_id: order.order_id().clone(),
            lines,
            replayed: false,
            attempts: 1,
        };
        self.orders.insert(
            order.order_id().clone(),
            (order.canonical_lines(), receipt.clone()),
        );
        Ok(receipt)
    }

    /// See [`InventoryStore::adjust`].
    pub fn adjust(&mut self, request: &AdjustRequest) -> Result<AdjustReceipt, DeductError> {
        if let Some(key) = &request.idempotency_key
            && let Some(&index) = self.by_key.get(key.as_str())
        {
            let entry = &self.ledger[index];
            if entry.reason != LedgerReason::Adjust
                || entry.sku != request.sku
                || entry.delta != request.delta
            {
                return Err(DeductError::IdempotencyKeyReused);
            }
            return Ok(AdjustReceipt {
                sku: entry.sku.clone(),
                delta: entry.delta,
                stock_after: entry.stock_after,
                ledger_id: entry.id,
                kind: entry.adjustment.unwrap_or(request.kind),
                reference: entry.reference.clone(),
                replayed: true,
                idempotency_key: key.clone(),
            });
        }
        let state = self.skus.get_mut(&request.sku).ok_or(DeductError::NotFound)?;
        let stock_after = state.stock + request.delta;
        if stock_after < 0 {
            return Err(DeductError::InsufficientStock {
                requested: -request.delta,
                available: state.stock,
            });
        }
        if stock_after > STOCK_MAX {
            return Err(InvalidInput::StockOutOfRange {
                given: stock_after,
                max: STOCK_MAX,
            }
            .into());
        }
        state.stock = stock_after;
        state.version += 1;
        let key = request
            .idempotency_key
            .clone()
            .unwrap_or_else(IdempotencyKey::generate);
        let ledger_id = self.push_entry(NewRow {
            sku: &request.sku,
            delta: request.delta,
            stock_after,
            reason: LedgerReason::Adjust,
            idempotency_key: Some(&key),
            reference: request.reference.as_deref(),
            adjustment: Some(request.kind),
        });
        Ok(AdjustReceipt {
            sku: request.sku.clone(),
            delta: request.delta,
            stock_after,
            ledger_id,
            kind: request.kind,
            reference: request.reference.clone(),
            replayed: false,
            idempotency_key: key,
        })
    }

    /// See [`InventoryStore::stock`].
    pub fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        let state = self.skus.get(sku).ok_or(DeductError::NotFound)?;
        Ok(StockLevel {
            sku: sku.clone(),
            stock: state.stock,
            reserved: state.reserved,
            initial_stock: state.initial_stock,
            version: state.version,
        })
    }

    /// See [`InventoryStore::ledger`].
    pub fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        if !self.skus.contains_key(sku) {
            return Err(DeductError::NotFound);
        }
        let after = page.after_id.unwrap_or(i64::MIN);
        Ok(self
            .ledger
            .iter()
            .filter(|e| &e.sku == sku && e.id > after)
            .take(page.limit as usize)
            .cloned()
            .collect())
    }

    /// Which of `keys` name a committed change: a keyed ledger row, or an order.
    pub fn committed_keys(&self, keys: &[IdempotencyKey]) -> Vec<IdempotencyKey> {
        keys.iter()
            .filter(|key| {
                self.by_key.contains_key(key.as_str())
                    || OrderId::parse(key.as_str()).is_ok_and(|id| self.orders.contains_key(&id))
            })
            .cloned()
            .collect()
    }

    /// See [`InventoryStore::snapshot`].
    pub fn snapshot(&self) -> Vec<SkuSnapshot> {
        self.skus
            .iter()
            .map(|(sku, state)| {
                let rows = self.ledger.iter().filter(|e| &e.sku == sku);
                SkuSnapshot {
                    sku: sku.clone(),
                    initial_stock: state.initial_stock,
                    stock: state.stock,
                    ledger_delta_sum: rows.clone().map(|e| e.delta).sum(),
                    ledger_rows: i64::try_from(rows.count()).expect("ledger fits i64"),
                }
            })
            .collect()
    }

    fn push_ledger(
        &mut self,
        sku: &SkuId,
        delta: i64,
        stock_after: i64,
        reason: LedgerReason,
        idempotency_key: &IdempotencyKey,
    ) -> i64 {
        self.push_entry(NewRow {
            sku,
            delta,
            stock_after,
            reason,
            idempotency_key: Some(idempotency_key),
            reference: None,
            adjustment: None,
        })
    }

    fn push_entry(&mut self, row: NewRow<'_>) -> i64 {
        let NewRow {
            sku,
            delta,
            stock_after,
            reason,
            idempotency_key,
            reference,
            adjustment,
        } = row;
        let id = i64::try_from(self.ledger.len()).expect("ledger fits i64") + 1;
        if let Some(key) = idempotency_key {
            self.by_key.insert(key.as_str().to_owned(), self.ledger.len());
        }
        self.ledger.push(LedgerEntry {
            id,
            sku: sku.clone(),
            delta,
            stock_after,
            reason,
            idempotency_key: idempotency_key.map(|key| key.as_str().to_owned()),
            created_at: Utc::now(),
            reference: reference.map(str::to_owned),
            adjustment,
        });
        id
    }
}

/// The key a stored ledger row carries.
fn stored_key(entry: &LedgerEntry) -> Result<IdempotencyKey, DeductError> {
    let raw = entry.idempotency_key.clone().ok_or(DeductError::Internal {
        context: "a ledger row found by its key has no key",
        source: None,
    })?;
    IdempotencyKey::parse(raw).map_err(|e| DeductError::internal("stored idempotency key is invalid", e))
}

/// The replay rule for deductions, written once: a key used before returns the first
/// receipt if it was a deduction of the same SKU and quantity, and `IdempotencyKeyReused`
/// otherwise.
pub fn replay(
    entry: &LedgerEntry,
    sku: &SkuId,
    quantity: Quantity,
    attempts: u32,
) -> Result<Receipt, DeductError> {
    if entry.reason != LedgerReason::Deduct || &entry.sku != sku || entry.delta != -quantity.get() {
        return Err(DeductError::IdempotencyKeyReused);
    }
    Ok(Receipt {
        sku: sku.clone(),
        quantity,
        remaining: entry.stock_after,
        ledger_id: entry.id,
        attempts,
        replayed: true,
        lock_wait_us: 0,
        idempotency_key: stored_key(entry)?,
    })
}

/// The replay rule for restocks: the same SKU and quantity, else `IdempotencyKeyReused`.
pub fn replay_restock(
    entry: &LedgerEntry,
    sku: &SkuId,
    quantity: Quantity,
) -> Result<RestockReceipt, DeductError> {
    if entry.reason != LedgerReason::Restock || &entry.sku != sku || entry.delta != quantity.get() {
        return Err(DeductError::IdempotencyKeyReused);
    }
    Ok(RestockReceipt {
        sku: sku.clone(),
        quantity,
        stock_after: entry.stock_after,
        ledger_id: entry.id,
        replayed: true,
        idempotency_key: stored_key(entry)?,
    })
}

/// The reference model behind the store trait, so the conformance suite can be checked
/// against the specification itself.
#[derive(Debug, Default)]
pub struct ReferenceStore {
    model: Mutex<ReferenceModel>,
}

impl ReferenceStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut ReferenceModel) -> T) -> T {
        f(&mut self.model.lock().expect("reference model poisoned"))
    }
}

impl InventoryStore for ReferenceStore {
    fn backend(&self) -> &'static str {
        "reference"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            strategies: Strategy::ALL.to_vec(),
            row_level_locking: false,
        }
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        self.with(|m| m.create_sku(sku, initial_stock))
    }

    async fn restock(&self, request: RestockRequest) -> Result<RestockReceipt, DeductError> {
        self.with(|m| m.restock(&request))
    }

    async fn deduct(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        self.with(|m| m.deduct(&request))
    }

    async fn place_order(&self, order: OrderRequest) -> Result<OrderReceipt, DeductError> {
        self.with(|m| m.place_order(&order))
    }

    async fn adjust(&self, request: AdjustRequest) -> Result<AdjustReceipt, DeductError> {
        self.with(|m| m.adjust(&request))
    }

    async fn reserve(&self, hold: HoldRequest) -> Result<HoldReceipt, DeductError> {
        self.with(|m| m.reserve(&hold))
    }

    async fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.with(|m| m.hold(hold_id))
    }

    async fn confirm_hold(&self, hold_id: &HoldId, lines: ConfirmLines) -> Result<HoldReceipt, DeductError> {
        self.with(|m| m.confirm_hold(hold_id, &lines))
    }

    async fn release_hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.with(|m| m.release_hold(hold_id))
    }

    async fn sweep_holds(&self, _batch: u32) -> Result<usize, DeductError> {
        // The model never expires a hold (see `holds.rs`).
        Ok(0)
    }

    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        self.with(|m| m.stock(sku))
    }

    async fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        self.with(|m| m.ledger(sku, page))
    }

    async fn committed_keys(&self, keys: &[IdempotencyKey]) -> Result<Vec<IdempotencyKey>, DeductError> {
        crate::domain::check_committed_keys(keys.len())?;
        Ok(self.with(|m| m.committed_keys(keys)))
    }

    async fn snapshot(&self) -> Result<Vec<SkuSnapshot>, DeductError> {
        Ok(self.with(|m| m.snapshot()))
    }

    async fn ping(&self) -> Result<(), DeductError> {
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: 0,
            idle: 0,
            max_size: 0,
        }
    }

    async fn close(&self) {}
}
