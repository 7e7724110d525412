//! What the audit reconciles, and what an adapter reports about itself.

use serde::Serialize;

use super::{SkuId, Strategy};

/// The raw per-SKU figures the audit reconciles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuSnapshot {
    /// The SKU.
    pub sku: SkuId,
    /// Stock at creation.
    pub initial_stock: i64,
    /// Stock now.
    pub stock: i64,
    /// Σ of the SKU's ledger deltas.
    pub ledger_delta_sum: i64,
    /// Number of the SKU's ledger rows.
    pub ledger_rows: i64,
}

/// One row of an adapter's snapshot query, in column order: sku, initial stock, stock (row
/// plus buckets), Σ ledger deltas, ledger rows.
pub type StoredSnapshotRow = (String, i64, i64, i64, i64);

impl SkuSnapshot {
    /// Builds the snapshots from an adapter's snapshot query, re-checking each stored SKU id.
    pub fn from_stored_rows(rows: Vec<StoredSnapshotRow>) -> Result<Vec<Self>, crate::DeductError> {
        rows.into_iter()
            .map(|(sku, initial_stock, stock, ledger_delta_sum, ledger_rows)| {
                Ok(SkuSnapshot {
                    sku: SkuId::parse(sku)
                        .map_err(|e| crate::DeductError::internal("stored sku id is invalid", e))?,
                    initial_stock,
                    stock,
                    ledger_delta_sum,
                    ledger_rows,
                })
            })
            .collect()
    }
}

/// What the audit found wrong with one SKU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discrepancy {
    /// The figures that do not add up.
    pub snapshot: SkuSnapshot,
    /// True if the stock is below zero.
    pub negative_stock: bool,
    /// `initial + Σ ledger deltas − stock`: 0 when the ledger reconciles.
    pub ledger_gap: i64,
}

/// An order whose ledger rows are not exactly its lines: some lines applied without the
/// others, or order rows with no claimed order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IncompleteOrder {
    /// The order id (the ledger rows' reference).
    pub order_id: String,
    /// Lines the order was claimed with (0: no order claimed this id).
    pub line_count: i64,
    /// Ledger rows with reason `order` and this reference.
    pub ledger_rows: i64,
}

/// One row of an adapter's order check, in column order: order id, line count, ledger rows.
pub type StoredOrderCheckRow = (String, i64, i64);

/// What the order check found: orders checked, and every incomplete one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OrderCheck {
    /// Orders checked.
    pub orders_checked: u64,
    /// Orders that do not have all their lines (empty when the check passes).
    pub incomplete: Vec<IncompleteOrder>,
}

impl OrderCheck {
    /// From the count of orders and the adapter's rows of incomplete ones.
    pub fn from_stored(orders_checked: i64, rows: Vec<StoredOrderCheckRow>) -> Self {
        Self {
            orders_checked: u64::try_from(orders_checked).unwrap_or(0),
            incomplete: rows
                .into_iter()
                .map(|(order_id, line_count, ledger_rows)| IncompleteOrder {
                    order_id,
                    line_count,
                    ledger_rows,
                })
                .collect(),
        }
    }
}

/// The result of reconciling every SKU (`stock ≥ 0` and `initial + Σ deltas = stock`) and
/// every order (all its lines or none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// SKUs checked.
    pub skus_checked: u64,
    /// Ledger rows summed.
    pub ledger_rows: u64,
    /// SKUs that broke an invariant; empty when the audit passes.
    pub discrepancies: Vec<Discrepancy>,
    /// Orders checked.
    pub orders_checked: u64,
    /// Orders without exactly their lines; empty when the audit passes.
    pub incomplete_orders: Vec<IncompleteOrder>,
}

impl AuditReport {
    /// Reconciles raw snapshots.
    pub fn from_snapshots(snapshots: &[SkuSnapshot]) -> Self {
        let mut ledger_rows = 0u64;
        let mut discrepancies = Vec::new();
        for snapshot in snapshots {
            ledger_rows += u64::try_from(snapshot.ledger_rows).unwrap_or(0);
            let ledger_gap = snapshot.initial_stock + snapshot.ledger_delta_sum - snapshot.stock;
            let negative_stock = snapshot.stock < 0;
            if negative_stock || ledger_gap != 0 {
                discrepancies.push(Discrepancy {
                    snapshot: snapshot.clone(),
                    negative_stock,
                    ledger_gap,
                });
            }
        }
        Self {
            skus_checked: snapshots.len() as u64,
            ledger_rows,
            discrepancies,
            orders_checked: 0,
            incomplete_orders: Vec::new(),
        }
    }

    /// Adds the order check's findings.
    pub fn with_orders(mut self, check: OrderCheck) -> Self {
        self.orders_checked = check.orders_checked;
        self.incomplete_orders = check.incomplete;
        self
    }

    /// True when every SKU reconciles and every order has all its lines.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty() && self.incomplete_orders.is_empty()
    }
}

/// What an adapter can do; the conformance suite reads it instead of guessing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capabilities {
    /// Strategies this adapter implements.
    pub strategies: Vec<Strategy>,
    /// False when the database admits one writer at a time (SQLite): row locks do not exist,
    /// so the conformance suite does not expect lock-wait behaviour to differ by strategy.
    pub row_level_locking: bool,
}

/// Pool occupancy, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PoolStatus {
    /// Connections open now.
    pub size: u32,
    /// Of those, idle.
    pub idle: u32,
    /// The configured maximum.
    pub max_size: u32,
}
