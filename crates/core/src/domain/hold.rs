//! Holds (reservations): units set aside while a customer pays, then confirmed (all, or some
//! with the rest released), released, or expired. Each hold resolves at most once.
//!
//! A hold takes its units out of the SKU's sellable `stock` at once, into `reserved`, so every
//! strategy's check (`stock >= units`) already counts active holds: on hand is `stock +
//! reserved`. Confirming moves units out of `reserved` (they are sold); releasing and expiring
//! move them back into `stock`. A hold past `expires_at` (the database's clock) stops counting
//! at once: reads report its units as available, and a change that would be refused for want
//! of them expires it first and runs again (see the engine's `hold.rs`).

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::order::{canonical_lines, summed_lines};
use super::{OrderLine, OrderStrategy, SkuId};
use crate::error::InvalidInput;

/// Shortest hold, in seconds.
pub const HOLD_TTL_MIN_S: u32 = 1;
/// Longest hold, in seconds (7 days): a cart left longer should be held again.
pub const HOLD_TTL_MAX_S: u32 = 7 * 24 * 3_600;
/// Most expired holds one sweep resolves in one transaction.
pub const HOLD_SWEEP_BATCH_MAX: u32 = 1_000;

super::order::reference_id!(
    /// A hold's id, which is also its idempotency key (a checkout session's id, say).
    HoldId,
    HoldId
);

/// Where a hold is in its life. Only `Active` holds units; the other three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldState {
    /// Holding its units, until `expires_at`.
    Active,
    /// Confirmed: its confirmed units are sold, the rest went back to stock.
    Confirmed,
    /// Released by the client: its units went back to stock.
    Released,
    /// Past `expires_at`: its units went back to stock (or are reported so, at read time,
    /// until the sweeper writes it).
    Expired,
}

impl HoldState {
    /// The value stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            HoldState::Active => "active",
            HoldState::Confirmed => "confirmed",
            HoldState::Released => "released",
            HoldState::Expired => "expired",
        }
    }

    /// Parses the stored column value.
    pub fn from_db(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(HoldState::Active),
            "confirmed" => Some(HoldState::Confirmed),
            "released" => Some(HoldState::Released),
            "expired" => Some(HoldState::Expired),
            _ => None,
        }
    }
}

impl fmt::Display for HoldState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated hold: lines summed per SKU, in canonical (SKU id) order, as for an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldRequest {
    hold_id: HoldId,
    lines: Vec<(SkuId, i64)>,
    ttl_s: u32,
    strategy: OrderStrategy,
}

impl HoldRequest {
    /// Validates a hold: the lines as for an order ([`super::ORDER_LINES_MAX`]), and a TTL in
    /// [`HOLD_TTL_MIN_S`]..=[`HOLD_TTL_MAX_S`].
    pub fn new(
        hold_id: HoldId,
        lines: Vec<OrderLine>,
        ttl_s: u32,
        strategy: OrderStrategy,
    ) -> Result<Self, InvalidInput> {
        if !(HOLD_TTL_MIN_S..=HOLD_TTL_MAX_S).contains(&ttl_s) {
            return Err(InvalidInput::HoldTtl {
                given: ttl_s,
                min: HOLD_TTL_MIN_S,
                max: HOLD_TTL_MAX_S,
            });
        }
        if strategy == OrderStrategy::Coalesced {
            return Err(InvalidInput::HoldStrategy { strategy });
        }
        Ok(Self {
            hold_id,
            lines: summed_lines(lines)?,
            ttl_s,
            strategy,
        })
    }

    /// The hold's id (its idempotency key).
    pub fn hold_id(&self) -> &HoldId {
        &self.hold_id
    }

    /// Each SKU once, with its summed units, in canonical order.
    pub fn lines(&self) -> &[(SkuId, i64)] {
        &self.lines
    }

    /// Seconds until it expires, counted on the database's clock from its commit.
    pub fn ttl_s(&self) -> u32 {
        self.ttl_s
    }

    /// How its units are taken (as for an order).
    pub fn strategy(&self) -> OrderStrategy {
        self.strategy
    }

    /// The lines as stored with the hold, to tell a replay from a reuse of the id.
    pub fn canonical_lines(&self) -> String {
        canonical_lines(&self.lines)
    }
}

/// What a confirm keeps: every held unit, or some units of some lines (the rest released).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfirmLines {
    /// Every line in full.
    All,
    /// These units per SKU (summed, canonical), each at most what the hold has of it; a
    /// held SKU not named is released entirely.
    Partial(Vec<(SkuId, i64)>),
}

impl ConfirmLines {
    /// Parses a partial confirm's lines (1..=[`super::ORDER_LINES_MAX`], summed per SKU).
    /// Whether they fit the hold is checked against it, under its lock.
    pub fn partial(lines: Vec<OrderLine>) -> Result<Self, InvalidInput> {
        summed_lines(lines).map(ConfirmLines::Partial)
    }

    /// The units of `sku` to confirm, out of `held`.
    pub fn units_of(&self, sku: &SkuId, held: i64) -> i64 {
        match self {
            ConfirmLines::All => held,
            ConfirmLines::Partial(lines) => lines
                .iter()
                .find(|(s, _)| s == sku)
                .map_or(0, |(_, units)| *units),
        }
    }
}

/// One line of a hold, as it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldLineReceipt {
    /// The SKU.
    pub sku: SkuId,
    /// Units held (the SKU's lines summed).
    pub quantity: i64,
    /// Units sold by the confirm (0 unless confirmed).
    pub confirmed: i64,
    /// Units given back to stock by a release, an expiry or a partial confirm.
    pub returned: i64,
    /// The SKU's available stock right after this hold's last write on it.
    pub available: i64,
}

/// A hold as it stands: the answer to creating, confirming, releasing or reading one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HoldReceipt {
    /// The hold's id.
    pub hold_id: HoldId,
    /// Its state. An active hold past `expires_at` reads as `expired` at once, before the
    /// sweeper writes its expiry.
    pub state: HoldState,
    /// When it stops holding its units (the database's clock).
    pub expires_at: DateTime<Utc>,
    /// Its lines, in canonical order.
    pub lines: Vec<HoldLineReceipt>,
    /// True when this answer replays a change committed before (by an earlier call, or by
    /// this one before its answer was lost), or reads one.
    pub replayed: bool,
    /// Attempts made (1 unless retried).
    pub attempts: u32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Quantity;

    fn line(sku: &str, units: i64) -> OrderLine {
        OrderLine {
            sku: SkuId::parse(sku).unwrap(),
            quantity: Quantity::new(units).unwrap(),
        }
    }

    #[test]
    fn ttl_and_ids_are_bounded() {
        let id = HoldId::parse("h-1").unwrap();
        for ttl_s in [0, HOLD_TTL_MAX_S + 1] {
            assert_eq!(
                HoldRequest::new(id.clone(), vec![line("a", 1)], ttl_s, OrderStrategy::Guarded),
                Err(InvalidInput::HoldTtl {
                    given: ttl_s,
                    min: HOLD_TTL_MIN_S,
                    max: HOLD_TTL_MAX_S
                })
            );
        }
        assert!(HoldId::parse("").is_err());
        assert!(HoldId::parse("a b").is_err());
        assert!(HoldId::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn lines_are_summed_like_an_order() {
        let id = HoldId::parse("h-1").unwrap();
        let hold = HoldRequest::new(
            id,
            vec![line("b", 1), line("a", 2), line("b", 3)],
            60,
            OrderStrategy::Locked,
        )
        .unwrap();
        assert_eq!(hold.canonical_lines(), "a=2,b=4");
        let partial = ConfirmLines::partial(vec![line("b", 1), line("b", 1)]).unwrap();
        assert_eq!(partial.units_of(&SkuId::parse("b").unwrap(), 4), 2);
        assert_eq!(partial.units_of(&SkuId::parse("a").unwrap(), 2), 0);
        assert_eq!(ConfirmLines::All.units_of(&SkuId::parse("a").unwrap(), 2), 2);
    }
}
