//! A store with the gate in front: deductions and orders pass the gate first; everything else
//! goes straight to the inner store, and the changes that move a SKU's available units by
//! other paths (restock, adjust, holds) recompute its counter afterwards.

use std::sync::Arc;

use stockguard_core::{
    AdjustReceipt, AdjustRequest, AuditReport, Capabilities, ConfirmLines, DeductError, DeductRequest,
    HoldId, HoldReceipt, HoldRequest, IdempotencyKey, IncrementalAuditReport, InventoryStore, LedgerEntry,
    LedgerPage, OrderReceipt, OrderRequest, PoolStatus, Receipt, RestockReceipt, RestockRequest, ShortLine,
    SkuId, SkuSnapshot, StockLevel,
};

use crate::gate::{Admission, Gate, Outcome};

/// `S` behind the admission gate. Implements [`InventoryStore`] itself, so the service and
/// the harness use it wherever they use a store.
#[derive(Debug)]
pub struct GatedStore<S> {
    store: S,
    gate: Arc<Gate>,
}

impl<S: InventoryStore> GatedStore<S> {
    /// Puts `gate` in front of `store`.
    pub fn new(store: S, gate: Arc<Gate>) -> Self {
        Self { store, gate }
    }

    /// The gate.
    pub fn gate(&self) -> &Arc<Gate> {
        &self.gate
    }

    /// The store behind the gate.
    pub fn inner(&self) -> &S {
        &self.store
    }

    /// Recomputes the counters of `skus` after a change that moved their available units by a
    /// path the gate does not see. A failure is left to the periodic reconciler.
    async fn refresh(&self, skus: &[&SkuId]) {
        for sku in skus.iter().filter(|sku| self.gate.covers(sku)) {
            if let Err(error) = self.gate.reconcile(&self.store, sku).await {
                tracing::warn!(%sku, %error, "admission gate: counter left to the reconciler");
            }
        }
    }

    /// Gives back every admitted line of an order that will not reach the database.
    async fn give_back(&self, admitted: &[SkuId], key: &IdempotencyKey) {
        for sku in admitted {
            self.gate.finish(sku, key, Outcome::NothingChanged).await;
        }
    }
}

fn hold_skus(receipt: &HoldReceipt) -> Vec<&SkuId> {
    receipt.lines.iter().map(|line| &line.sku).collect()
}

impl<S: InventoryStore> InventoryStore for GatedStore<S> {
    fn backend(&self) -> &'static str {
        self.store.backend()
    }

    fn capabilities(&self) -> Capabilities {
        self.store.capabilities()
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        let created = self.store.create_sku(sku, initial_stock).await?;
        self.refresh(&[sku]).await;
        Ok(created)
    }

    async fn restock(&self, request: RestockRequest) -> Result<RestockReceipt, DeductError> {
        let receipt = self.store.restock(request).await?;
        self.refresh(&[&receipt.sku]).await;
        Ok(receipt)
    }

    async fn deduct(&self, mut request: DeductRequest) -> Result<Receipt, DeductError> {
        let units = request.quantity.get();
        // Checked before a key is made: a refusal from the hint needs none.
        if self.gate.covers(&request.sku)
            && self
                .gate
                .refused_by_hint(&request.sku, request.idempotency_key.as_ref())
        {
            return Err(DeductError::InsufficientStock {
                requested: units,
                available: 0,
            });
        }
        // The record must carry the key the ledger row will carry, so one is made here when
        // the client sent none.
        let key = request
            .idempotency_key
            .get_or_insert_with(IdempotencyKey::generate)
            .clone();
        let sku = request.sku.clone();
        match self.gate.admit(&self.store, &sku, &key, units).await? {
            Admission::Refused { available } => {
                if available == 0 {
                    self.gate.take_hint(&sku).await;
                }
                Err(DeductError::InsufficientStock {
                    requested: units,
                    available,
                })
            }
            Admission::Pass => self.store.deduct(request).await,
            Admission::Bypassed => {
                let answer = self.store.deduct(request).await;
                let outcome = Outcome::of(&answer, |receipt| receipt.replayed);
                self.gate.finish_bypassed(&sku, &key, units, outcome).await;
                answer
            }
            Admission::Admitted => {
                let answer = self.store.deduct(request).await;
                let outcome = Outcome::of(&answer, |receipt| receipt.replayed);
                self.gate.finish(&sku, &key, outcome).await;
                answer
            }
        }
    }

    /// Lines are admitted one by one in the order's canonical SKU order (one script per SKU,
    /// so an order spans cluster slots). A short line gives back the lines admitted before it.
    async fn place_order(&self, order: OrderRequest) -> Result<OrderReceipt, DeductError> {
        let key = order.order_id().idempotency_key();
        let mut admitted = Vec::with_capacity(order.lines().len());
        let mut bypassed = Vec::new();
        let mut short = Vec::new();
        for (sku, units) in order.lines() {
            if self.gate.covers(sku) && self.gate.refused_by_hint(sku, Some(&key)) {
                short.push(ShortLine {
                    sku: sku.clone(),
                    requested: *units,
                    available: 0,
                });
                continue;
            }
            match self.gate.admit(&self.store, sku, &key, *units).await {
                Ok(Admission::Admitted) => admitted.push(sku.clone()),
                Ok(Admission::Pass) => {}
                Ok(Admission::Bypassed) => bypassed.push((sku.clone(), *units)),
                Ok(Admission::Refused { available }) => short.push(ShortLine {
                    sku: sku.clone(),
                    requested: *units,
                    available,
                }),
                Err(error) => {
                    self.give_back(&admitted, &key).await;
                    return Err(error);
                }
            }
        }
        if !short.is_empty() {
            self.give_back(&admitted, &key).await;
            return Err(DeductError::OrderShort { lines: short });
        }
        let answer = self.store.place_order(order).await;
        let outcome = Outcome::of(&answer, |receipt| receipt.replayed);
        for sku in &admitted {
            self.gate.finish(sku, &key, outcome).await;
        }
        for (sku, units) in &bypassed {
            self.gate.finish_bypassed(sku, &key, *units, outcome).await;
        }
        answer
    }

    async fn reserve(&self, hold: HoldRequest) -> Result<HoldReceipt, DeductError> {
        let receipt = self.store.reserve(hold).await?;
        self.refresh(&hold_skus(&receipt)).await;
        Ok(receipt)
    }

    async fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.store.hold(hold_id).await
    }

    async fn confirm_hold(&self, hold_id: &HoldId, lines: ConfirmLines) -> Result<HoldReceipt, DeductError> {
        let receipt = self.store.confirm_hold(hold_id, lines).await?;
        self.refresh(&hold_skus(&receipt)).await;
        Ok(receipt)
    }

    async fn release_hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        let receipt = self.store.release_hold(hold_id).await?;
        self.refresh(&hold_skus(&receipt)).await;
        Ok(receipt)
    }

    /// Expired holds' units come back in the counters at the next reconcile pass.
    async fn sweep_holds(&self, batch: u32) -> Result<usize, DeductError> {
        self.store.sweep_holds(batch).await
    }

    async fn adjust(&self, request: AdjustRequest) -> Result<AdjustReceipt, DeductError> {
        let sku = request.sku.clone();
        let receipt = self.store.adjust(request).await?;
        self.refresh(&[&sku]).await;
        Ok(receipt)
    }

    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        self.store.stock(sku).await
    }

    async fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        self.store.ledger(sku, page).await
    }

    async fn committed_keys(&self, keys: &[IdempotencyKey]) -> Result<Vec<IdempotencyKey>, DeductError> {
        self.store.committed_keys(keys).await
    }

    async fn snapshot(&self) -> Result<Vec<SkuSnapshot>, DeductError> {
        self.store.snapshot().await
    }

    async fn audit(&self) -> Result<AuditReport, DeductError> {
        self.store.audit().await
    }

    async fn audit_incremental(&self) -> Result<IncrementalAuditReport, DeductError> {
        self.store.audit_incremental().await
    }

    async fn ping(&self) -> Result<(), DeductError> {
        self.store.ping().await
    }

    fn pool_status(&self) -> PoolStatus {
        self.store.pool_status()
    }

    async fn close(&self) {
        self.store.close().await;
    }
}
