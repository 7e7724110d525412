//! Multi-line orders: all lines apply or none do.
//!
//! An order is parsed once into [`OrderRequest`]: lines with the same SKU are summed before
//! any check (Medusa #16502 oversold by checking each duplicate line on its own), and the
//! lines are kept in one canonical order, by SKU id, which is also the order every flow
//! locks and writes them in, so two orders over the same SKUs never deadlock.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::{IDEMPOTENCY_KEY_MAX_LEN, Quantity, SkuId};
use crate::error::InvalidInput;

/// Most lines one order may carry (after summing lines with the same SKU, and before).
pub const ORDER_LINES_MAX: usize = 100;

/// An id that is also an idempotency key (an order's, a hold's): 1..=128 printable ASCII
/// characters, the rules of [`IdempotencyKey`], refused with `$invalid` otherwise.
macro_rules! reference_id {
    ($(#[$doc:meta])* $name:ident, $invalid:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses an id, rejecting empty, over-long or non-printable input.
            pub fn parse(raw: impl Into<String>) -> Result<Self, crate::error::InvalidInput> {
                let raw = raw.into();
                if !crate::domain::order::is_reference_id(&raw) {
                    return Err(crate::error::InvalidInput::$invalid {
                        max_len: crate::domain::IDEMPOTENCY_KEY_MAX_LEN,
                    });
                }
                Ok(Self(raw))
            }

            /// The id as stored (and as its ledger rows' reference).
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as the idempotency key it is: for `OutcomeUnknown` answers, the
            /// `Idempotency-Key` response header and test hooks. The two share their rules,
            /// so every such id is a valid key.
            pub fn idempotency_key(&self) -> crate::domain::IdempotencyKey {
                crate::domain::IdempotencyKey::parse(self.0.clone())
                    .expect("reference ids and idempotency keys share their rules")
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let raw = String::deserialize(d)?;
                Self::parse(raw).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use reference_id;

reference_id!(
    /// An order's id, which is also its idempotency key.
    OrderId,
    OrderId
);

/// The rules an order id and a hold id share with an idempotency key: 1..=128 printable
/// ASCII characters.
pub(crate) fn is_reference_id(raw: &str) -> bool {
    !raw.is_empty() && raw.len() <= IDEMPOTENCY_KEY_MAX_LEN && raw.chars().all(|c| c.is_ascii_graphic())
}

/// One line as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The SKU.
    pub sku: SkuId,
    /// Units of it.
    pub quantity: Quantity,
}

/// How an order is applied. Both lock and write the lines in canonical SKU order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStrategy {
    /// One transaction: claim the order id, lock every line's row (`FOR NO KEY UPDATE` /
    /// `FOR UPDATE`), check every line against what the locks read, write, commit.
    Locked,
    /// One transaction of conditional decrements, one per line, each taking its row lock as
    /// it writes: no read round trip. A line that misses rolls everything back, and the
    /// order runs once locked, which either applies it or names every short line exactly.
    #[default]
    Guarded,
    /// Group commit for hot SKUs: concurrent orders that share a SKU are placed in one
    /// transaction (locks on the union of their SKUs in canonical order, one claim statement,
    /// one write of every line, one COMMIT). Each order still succeeds or is refused on its
    /// own, against the stock the orders before it in the batch left. An order alone in its
    /// batch is placed `Guarded`. Orders only: a hold is placed `Locked` or `Guarded`.
    Coalesced,
}

impl OrderStrategy {
    /// Every order strategy.
    pub const ALL: [OrderStrategy; 3] = [
        OrderStrategy::Locked,
        OrderStrategy::Guarded,
        OrderStrategy::Coalesced,
    ];

    /// The name in requests, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStrategy::Locked => "locked",
            OrderStrategy::Guarded => "guarded",
            OrderStrategy::Coalesced => "coalesced",
        }
    }
}

impl fmt::Display for OrderStrategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A validated order: lines summed per SKU, in canonical (SKU id) order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRequest {
    order_id: OrderId,
    lines: Vec<(SkuId, i64)>,
    strategy: OrderStrategy,
}

impl OrderRequest {
    /// Validates and canonicalises an order: 1..=[`ORDER_LINES_MAX`] lines, each SKU's lines
    /// summed (the sum must stay a valid [`Quantity`]), sorted by SKU id.
    pub fn new(
        order_id: OrderId,
        lines: Vec<OrderLine>,
        strategy: OrderStrategy,
    ) -> Result<Self, InvalidInput> {
        Ok(Self {
            order_id,
            lines: summed_lines(lines)?,
            strategy,
        })
    }

    /// The order's id (its idempotency key).
    pub fn order_id(&self) -> &OrderId {
        &self.order_id
    }

    /// Each SKU once, with its summed units, in canonical order.
    pub fn lines(&self) -> &[(SkuId, i64)] {
        &self.lines
    }

    /// How it is applied.
    pub fn strategy(&self) -> OrderStrategy {
        self.strategy
    }

    /// The lines as stored with the order, to tell a replay from a reuse of the id:
    /// `sku=units` joined by `,`, in canonical order (neither character is allowed in a SKU
    /// id).
    pub fn canonical_lines(&self) -> String {
        canonical_lines(&self.lines)
    }
}

/// Checks 1..=[`ORDER_LINES_MAX`] lines, sums each SKU's lines (the sum must stay a valid
/// [`Quantity`]) and sorts them by SKU id: the one canonical form of an order's or a hold's
/// lines.
pub(crate) fn summed_lines(lines: Vec<OrderLine>) -> Result<Vec<(SkuId, i64)>, InvalidInput> {
    if lines.is_empty() || lines.len() > ORDER_LINES_MAX {
        return Err(InvalidInput::OrderLines {
            given: lines.len(),
            max: ORDER_LINES_MAX,
        });
    }
    let mut summed: BTreeMap<SkuId, i64> = BTreeMap::new();
    for line in lines {
        *summed.entry(line.sku).or_default() += line.quantity.get();
    }
    summed
        .into_iter()
        .map(|(sku, units)| Quantity::new(units).map(|q| (sku, q.get())))
        .collect()
}

/// Canonical lines as stored: `sku=units` joined by `,` (neither character is allowed in a
/// SKU id).
pub(crate) fn canonical_lines(lines: &[(SkuId, i64)]) -> String {
    lines
        .iter()
        .map(|(sku, units)| format!("{sku}={units}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Parses stored canonical lines back (for naming a mismatch); `None` if malformed.
pub fn parse_canonical_lines(stored: &str) -> Option<Vec<(String, i64)>> {
    stored
        .split(',')
        .map(|line| {
            let (sku, units) = line.split_once('=')?;
            Some((sku.to_owned(), units.parse().ok()?))
        })
        .collect()
}

/// One applied line of an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderLineReceipt {
    /// The SKU.
    pub sku: SkuId,
    /// Units taken (the SKU's lines summed).
    pub quantity: i64,
    /// The SKU's stock right after the order.
    pub remaining: i64,
    /// The line's ledger row.
    pub ledger_id: i64,
}

/// Proof that an order committed: every line, in canonical order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OrderReceipt {
    /// The order's id.
    pub order_id: OrderId,
    /// Its lines, one per SKU, in canonical order.
    pub lines: Vec<OrderLineReceipt>,
    /// True when this answer replays an order committed before (by an earlier call, or by
    /// this one before its answer was lost).
    pub replayed: bool,
    /// Attempts made (1 unless retried).
    pub attempts: u32,
}

/// A line refused for want of stock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ShortLine {
    /// The SKU.
    pub sku: SkuId,
    /// Units the order asked for (summed).
    pub requested: i64,
    /// Units available when the order was refused.
    pub available: i64,
}

/// Where an order id's stored lines and a new request differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LineMismatch {
    /// The SKU.
    pub sku: String,
    /// Units stored with the order id (0: not in the stored order).
    pub stored: i64,
    /// Units in this request (0: not in this request).
    pub given: i64,
}

/// The lines where `stored` (canonical text) and `lines` (canonical) differ, by SKU.
pub fn line_mismatches(stored: &str, lines: &[(SkuId, i64)]) -> Vec<LineMismatch> {
    let mut by_sku: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for (sku, units) in parse_canonical_lines(stored).unwrap_or_default() {
        by_sku.entry(sku).or_default().0 = units;
    }
    for (sku, units) in lines {
        by_sku.entry(sku.as_str().to_owned()).or_default().1 = *units;
    }
    by_sku
        .into_iter()
        .filter(|(_, (stored, given))| stored != given)
        .map(|(sku, (stored, given))| LineMismatch { sku, stored, given })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(sku: &str, units: i64) -> OrderLine {
        OrderLine {
            sku: SkuId::parse(sku).unwrap(),
            quantity: Quantity::new(units).unwrap(),
        }
    }

    fn order(lines: Vec<OrderLine>) -> Result<OrderRequest, InvalidInput> {
        OrderRequest::new(OrderId::parse("o-1").unwrap(), lines, OrderStrategy::Locked)
    }

    #[test]
    fn duplicate_lines_are_summed_and_sorted() {
        let order = order(vec![line("b", 2), line("a", 1), line("b", 3)]).unwrap();
        let expected = vec![(SkuId::parse("a").unwrap(), 1), (SkuId::parse("b").unwrap(), 5)];
        assert_eq!(order.lines(), expected.as_slice());
        assert_eq!(order.canonical_lines(), "a=1,b=5");
        assert_eq!(
            parse_canonical_lines(&order.canonical_lines()),
            Some(vec![("a".to_owned(), 1), ("b".to_owned(), 5)])
        );
    }

    #[test]
    fn limits_are_explicit() {
        assert_eq!(
            order(vec![]),
            Err(InvalidInput::OrderLines {
                given: 0,
                max: ORDER_LINES_MAX
            })
        );
        let many = (0..=ORDER_LINES_MAX).map(|i| line(&format!("s{i}"), 1)).collect();
        assert!(matches!(order(many), Err(InvalidInput::OrderLines { .. })));
        let big = i64::from(crate::domain::QUANTITY_MAX);
        assert!(matches!(
            order(vec![line("a", big), line("a", 1)]),
            Err(InvalidInput::QuantityOutOfRange { .. })
        ));
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse("has space").is_err());
        assert!(OrderId::parse("x".repeat(129)).is_err());
    }

    #[test]
    fn mismatches_name_each_differing_sku() {
        let order = order(vec![line("a", 1), line("c", 2)]).unwrap();
        assert_eq!(
            line_mismatches("a=1,b=2", order.lines()),
            vec![
                LineMismatch {
                    sku: "b".into(),
                    stored: 2,
                    given: 0
                },
                LineMismatch {
                    sku: "c".into(),
                    stored: 0,
                    given: 2
                },
            ]
        );
        assert!(line_mismatches("a=1,c=2", order.lines()).is_empty());
    }
}
