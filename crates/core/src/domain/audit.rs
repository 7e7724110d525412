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
    /// True when ledger rows name a SKU that has no inventory row (`snapshot` then reads
    /// initial stock and stock as 0). Only a schema whose ledger has no foreign key to
    /// inventory can hold such rows: PostgreSQL's (its migration 0008).
    pub missing_sku: bool,
}

impl Discrepancy {
    /// What is wrong with `snapshot`, if anything: stock below zero, or `initial + Σ ≠ stock`.
    /// The one check both audits, full and incremental, apply to a SKU.
    pub fn of(snapshot: &SkuSnapshot) -> Option<Self> {
        let ledger_gap = snapshot.initial_stock + snapshot.ledger_delta_sum - snapshot.stock;
        let negative_stock = snapshot.stock < 0;
        (negative_stock || ledger_gap != 0).then(|| Discrepancy {
            snapshot: snapshot.clone(),
            negative_stock,
            ledger_gap,
            missing_sku: false,
        })
    }

    /// Ledger rows of `sku`, which has no inventory row: a discrepancy whatever they sum to.
    pub fn missing_sku(orphan: OrphanLedger) -> Self {
        Discrepancy {
            snapshot: SkuSnapshot {
                sku: orphan.sku,
                initial_stock: 0,
                stock: 0,
                ledger_delta_sum: orphan.ledger_delta_sum,
                ledger_rows: orphan.ledger_rows,
            },
            negative_stock: false,
            ledger_gap: orphan.ledger_delta_sum,
            missing_sku: true,
        }
    }
}

/// Ledger rows that name a SKU missing from inventory, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrphanLedger {
    /// The SKU the rows name.
    pub sku: SkuId,
    /// Σ of their deltas.
    pub ledger_delta_sum: i64,
    /// How many there are.
    pub ledger_rows: i64,
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

/// A hold's ledger rows, summed, as the audit checks them against its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldRows {
    /// The hold id (the ledger rows' reference).
    pub hold_id: String,
    /// Its stored state.
    pub state: String,
    /// Lines it was claimed with.
    pub line_count: i64,
    /// Rows with reason `reserve`.
    pub reserve_rows: i64,
    /// Rows with reason `confirm`.
    pub confirm_rows: i64,
    /// Rows with reason `release`.
    pub release_rows: i64,
    /// Rows with reason `expire`.
    pub expire_rows: i64,
    /// Units its `reserve` rows took from stock.
    pub reserved_units: i64,
    /// Units its `release` and `expire` rows gave back.
    pub returned_units: i64,
    /// The sum of its `confirm` rows' deltas (0: a confirm does not move `stock`).
    pub confirm_delta: i64,
}

/// One row of an adapter's hold check, in [`HoldRows`] field order.
pub type StoredHoldRows = (String, String, i64, i64, i64, i64, i64, i64, i64, i64);

impl HoldRows {
    /// What is wrong with the hold, if anything: every line reserved once, then, by state,
    /// nothing more (active), every line released or expired in full, or every line confirmed
    /// with at most the unconfirmed rest released. So a hold resolves at most once.
    pub fn problem(&self) -> Option<&'static str> {
        let n = self.line_count;
        let resolutions = (self.confirm_rows, self.release_rows, self.expire_rows);
        if self.reserve_rows != n || n <= 0 {
            return Some("not every line was reserved exactly once");
        }
        if self.confirm_delta != 0 {
            return Some("a confirm row moved stock");
        }
        let fits = match self.state.as_str() {
            "active" => resolutions == (0, 0, 0),
            "released" => resolutions == (0, n, 0) && self.returned_units == self.reserved_units,
            "expired" => resolutions == (0, 0, n) && self.returned_units == self.reserved_units,
            "confirmed" => {
                self.confirm_rows == n
                    && self.expire_rows == 0
                    && self.release_rows <= n
                    && (0..self.reserved_units).contains(&self.returned_units)
            }
            _ => false,
        };
        (!fits).then_some("its ledger rows do not fit its state (resolved more than once, or in part)")
    }
}

/// A hold that broke an invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadHold {
    /// What the audit found.
    pub problem: &'static str,
    /// Its rows.
    pub rows: HoldRows,
}

/// A SKU whose `reserved` is not the sum of its active holds' units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReservedMismatch {
    /// The SKU.
    pub sku: String,
    /// Its `reserved` column.
    pub reserved: i64,
    /// Units its active holds' `reserve` rows took.
    pub active_holds: i64,
}

/// One row of an adapter's reserved check, in [`ReservedMismatch`] field order.
pub type StoredReservedMismatch = (String, i64, i64);

/// What the hold check found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HoldCheck {
    /// Holds checked.
    pub holds_checked: u64,
    /// Holds whose rows do not fit their state (empty when the check passes).
    pub bad_holds: Vec<BadHold>,
    /// SKUs whose `reserved` is off (empty when the check passes).
    pub reserved_mismatches: Vec<ReservedMismatch>,
}

impl HoldCheck {
    /// From every hold's rows and the adapter's reserved mismatches.
    pub fn from_stored(holds: Vec<StoredHoldRows>, mismatches: Vec<StoredReservedMismatch>) -> Self {
        let holds_checked = holds.len() as u64;
        let bad_holds = holds
            .into_iter()
            .map(|row| HoldRows {
                hold_id: row.0,
                state: row.1,
                line_count: row.2,
                reserve_rows: row.3,
                confirm_rows: row.4,
                release_rows: row.5,
                expire_rows: row.6,
                reserved_units: row.7,
                returned_units: row.8,
                confirm_delta: row.9,
            })
            .filter_map(|rows| rows.problem().map(|problem| BadHold { problem, rows }))
            .collect();
        let reserved_mismatches = mismatches
            .into_iter()
            .map(|(sku, reserved, active_holds)| ReservedMismatch {
                sku,
                reserved,
                active_holds,
            })
            .collect();
        Self {
            holds_checked,
            bad_holds,
            reserved_mismatches,
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
    /// Holds checked.
    pub holds_checked: u64,
    /// Holds resolved more than once or in part; empty when the audit passes.
    pub bad_holds: Vec<BadHold>,
    /// SKUs whose `reserved` is not the sum of their active holds (or is below zero); empty
    /// when the audit passes.
    pub reserved_mismatches: Vec<ReservedMismatch>,
}

impl AuditReport {
    /// Reconciles raw snapshots.
    pub fn from_snapshots(snapshots: &[SkuSnapshot]) -> Self {
        let mut ledger_rows = 0u64;
        let mut discrepancies = Vec::new();
        for snapshot in snapshots {
            ledger_rows += u64::try_from(snapshot.ledger_rows).unwrap_or(0);
            discrepancies.extend(Discrepancy::of(snapshot));
        }
        Self {
            skus_checked: snapshots.len() as u64,
            ledger_rows,
            discrepancies,
            orders_checked: 0,
            incomplete_orders: Vec::new(),
            holds_checked: 0,
            bad_holds: Vec::new(),
            reserved_mismatches: Vec::new(),
        }
    }

    /// Adds the hold check's findings.
    pub fn with_holds(mut self, check: HoldCheck) -> Self {
        self.holds_checked = check.holds_checked;
        self.bad_holds = check.bad_holds;
        self.reserved_mismatches = check.reserved_mismatches;
        self
    }

    /// Adds the order check's findings.
    pub fn with_orders(mut self, check: OrderCheck) -> Self {
        self.orders_checked = check.orders_checked;
        self.incomplete_orders = check.incomplete;
        self
    }

    /// True when every SKU reconciles, every order has all its lines, every hold resolved at
    /// most once and in full, and every SKU's `reserved` is its active holds' units.
    pub fn is_clean(&self) -> bool {
        self.discrepancies.is_empty()
            && self.incomplete_orders.is_empty()
            && self.bad_holds.is_empty()
            && self.reserved_mismatches.is_empty()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(state: &str, counts: (i64, i64, i64, i64), returned: i64) -> HoldRows {
        HoldRows {
            hold_id: "h".into(),
            state: state.into(),
            line_count: 2,
            reserve_rows: counts.0,
            confirm_rows: counts.1,
            release_rows: counts.2,
            expire_rows: counts.3,
            reserved_units: 5,
            returned_units: returned,
            confirm_delta: 0,
        }
    }

    #[test]
    fn a_hold_fits_its_state_or_is_named() {
        for fine in [
            rows("active", (2, 0, 0, 0), 0),
            rows("released", (2, 0, 2, 0), 5),
            rows("expired", (2, 0, 0, 2), 5),
            rows("confirmed", (2, 2, 0, 0), 0),
            rows("confirmed", (2, 2, 1, 0), 3),
        ] {
            assert_eq!(fine.problem(), None, "{fine:?}");
        }
        for bad in [
            rows("active", (1, 0, 0, 0), 0),
            rows("active", (2, 0, 2, 0), 5),
            rows("released", (2, 2, 2, 0), 5),
            rows("released", (2, 0, 2, 2), 5),
            rows("expired", (2, 0, 0, 2), 4),
            rows("confirmed", (2, 2, 0, 2), 5),
            rows("confirmed", (2, 2, 2, 0), 5),
            rows("confirmed", (2, 1, 0, 0), 0),
            rows("gone", (2, 0, 0, 0), 0),
        ] {
            assert!(bad.problem().is_some(), "{bad:?}");
        }
        let mut moved = rows("confirmed", (2, 2, 0, 0), 0);
        moved.confirm_delta = -1;
        assert!(moved.problem().is_some());
    }
}
