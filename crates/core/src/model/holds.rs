//! Holds in the reference model, written plainly: the specification the engine is compared
//! against. The model has no database clock: a hold it places expires `ttl_s` after now on
//! the local clock, and the model never expires one by itself (the state machine holds for
//! longer than it runs); expiry is tested against the databases.

use chrono::Utc;

use super::{NewRow, ReferenceModel};
use crate::domain::{
    ConfirmLines, HoldId, HoldLineReceipt, HoldReceipt, HoldRequest, HoldState, LedgerReason, ShortLine,
    SkuId, line_mismatches,
};
use crate::error::{DeductError, InvalidInput};

/// A hold as the model keeps it.
#[derive(Debug, Clone)]
pub(super) struct ModelHold {
    lines: String,
    receipt: HoldReceipt,
}

impl ReferenceModel {
    /// See [`crate::InventoryStore::reserve`].
    pub fn reserve(&mut self, request: &HoldRequest) -> Result<HoldReceipt, DeductError> {
        if let Some(hold) = self.holds.get(request.hold_id()) {
            let mismatches = line_mismatches(&hold.lines, request.lines());
            if !mismatches.is_empty() {
                return Err(DeductError::HoldMismatch { mismatches });
            }
            return Ok(HoldReceipt {
                replayed: true,
                ..hold.receipt.clone()
            });
        }
        let missing: Vec<SkuId> = request
            .lines()
            .iter()
            .filter(|(sku, _)| !self.skus.contains_key(sku))
            .map(|(sku, _)| sku.clone())
            .collect();
        if !missing.is_empty() {
            return Err(DeductError::SkusNotFound { skus: missing });
        }
        let short: Vec<ShortLine> = request
            .lines()
            .iter()
            .filter(|(sku, units)| self.skus[sku].stock < *units)
            .map(|(sku, units)| ShortLine {
                sku: sku.clone(),
                requested: *units,
                available: self.skus[sku].stock,
            })
            .collect();
        if !short.is_empty() {
            return Err(DeductError::OrderShort { lines: short });
        }
        let mut lines = Vec::new();
        for (sku, units) in request.lines() {
            let available = self.move_units(sku, -units, *units, LedgerReason::Reserve, request.hold_id());
            lines.push(HoldLineReceipt {
                sku: sku.clone(),
                quantity: *units,
                confirmed: 0,
                returned: 0,
                available,
            });
        }
        let receipt = HoldReceipt {
            hold_id: request.hold_id().clone(),
            state: HoldState::Active,
            expires_at: Utc::now() + chrono::Duration::seconds(i64::from(request.ttl_s())),
            lines,
            replayed: false,
            attempts: 1,
        };
        let hold = ModelHold {
            lines: request.canonical_lines(),
            receipt: receipt.clone(),
        };
        self.holds.insert(request.hold_id().clone(), hold);
        Ok(receipt)
    }

    /// See [`crate::InventoryStore::hold`].
    pub fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.holds
            .get(hold_id)
            .map(|hold| HoldReceipt {
                replayed: false,
                ..hold.receipt.clone()
            })
            .ok_or(DeductError::HoldNotFound)
    }

    /// See [`crate::InventoryStore::confirm_hold`].
    pub fn confirm_hold(
        &mut self,
        hold_id: &HoldId,
        confirm: &ConfirmLines,
    ) -> Result<HoldReceipt, DeductError> {
        let hold = self.holds.get(hold_id).ok_or(DeductError::HoldNotFound)?.clone();
        let units_of = |line: &HoldLineReceipt| match confirm {
            ConfirmLines::All => line.quantity,
            ConfirmLines::Partial(lines) => lines
                .iter()
                .find(|(sku, _)| *sku == line.sku)
                .map_or(0, |(_, units)| *units),
        };
        match hold.receipt.state {
            HoldState::Active => {}
            HoldState::Confirmed if hold.receipt.lines.iter().all(|l| l.confirmed == units_of(l)) => {
                return Ok(HoldReceipt {
                    replayed: true,
                    ..hold.receipt
                });
            }
            HoldState::Expired => {
                return Err(DeductError::HoldExpired {
                    expires_at: hold.receipt.expires_at,
                });
            }
            state => return Err(DeductError::HoldResolved { state }),
        }
        if let ConfirmLines::Partial(lines) = confirm {
            for (sku, units) in lines {
                let held = hold
                    .receipt
                    .lines
                    .iter()
                    .find(|l| &l.sku == sku)
                    .map_or(0, |l| l.quantity);
                if *units > held {
                    return Err(InvalidInput::ConfirmLine {
                        sku: sku.to_string(),
                        given: *units,
                        held,
                    }
                    .into());
                }
            }
        }
        let mut receipt = hold.receipt.clone();
        receipt.state = HoldState::Confirmed;
        for line in &mut receipt.lines {
            let confirmed = units_of(line);
            line.available = self.move_units(&line.sku, 0, -confirmed, LedgerReason::Confirm, hold_id);
            line.confirmed = confirmed;
            let rest = line.quantity - confirmed;
            if rest > 0 {
                line.available = self.move_units(&line.sku, rest, -rest, LedgerReason::Release, hold_id);
                line.returned = rest;
            }
        }
        self.holds.get_mut(hold_id).expect("read above").receipt = receipt.clone();
        Ok(receipt)
    }

    /// See [`crate::InventoryStore::release_hold`].
    pub fn release_hold(&mut self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        let hold = self.holds.get(hold_id).ok_or(DeductError::HoldNotFound)?.clone();
        match hold.receipt.state {
            HoldState::Active => {}
            HoldState::Released => {
                return Ok(HoldReceipt {
                    replayed: true,
                    ..hold.receipt
                });
            }
            HoldState::Expired => {
                return Err(DeductError::HoldExpired {
                    expires_at: hold.receipt.expires_at,
                });
            }
            state => return Err(DeductError::HoldResolved { state }),
        }
        let mut receipt = hold.receipt.clone();
        receipt.state = HoldState::Released;
        for line in &mut receipt.lines {
            line.available = self.move_units(
                &line.sku,
                line.quantity,
                -line.quantity,
                LedgerReason::Release,
                hold_id,
            );
            line.returned = line.quantity;
        }
        self.holds.get_mut(hold_id).expect("read above").receipt = receipt.clone();
        Ok(receipt)
    }

    /// Moves a SKU's `stock` and `reserved`, writing the hold's ledger row; the stock after.
    fn move_units(
        &mut self,
        sku: &SkuId,
        stock_delta: i64,
        reserved_delta: i64,
        reason: LedgerReason,
        hold_id: &HoldId,
    ) -> i64 {
        let state = self.skus.get_mut(sku).expect("a hold's SKUs exist");
        state.stock += stock_delta;
        state.reserved += reserved_delta;
        state.version += 1;
        let stock_after = state.stock;
        self.push_entry(NewRow {
            sku,
            delta: stock_delta,
            stock_after,
            reason,
            idempotency_key: None,
            reference: Some(hold_id.as_str()),
            adjustment: None,
        });
        stock_after
    }
}
