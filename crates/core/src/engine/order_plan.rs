//! Deciding a coalesced batch of orders: each order, in arrival order, against the stock the
//! orders before it left, exactly as if they had been placed one after another. Pure, so the
//! rule is written once and checked against the reference model without a database.

use std::collections::HashMap;

use super::LockedRow;
use crate::domain::{OrderRequest, ShortLine, SkuId};

/// What one order of the batch does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Applied: for each of its lines (canonical order), the row's stock after the line and
    /// the `stock_after` its ledger row records.
    Apply(Vec<(i64, i64)>),
    /// Refused: every short line, with what was left for it.
    Short(Vec<ShortLine>),
    /// Refused: these SKUs do not exist.
    Missing(Vec<SkuId>),
    /// Not decidable against the rows alone: a short line's SKU holds (or held) `Sharded`
    /// bucket stock, which only the single path gathers. The order runs on its own after the
    /// batch.
    Alone,
}

/// Decides `orders` in order against `rows` (each SKU's row read under this transaction's
/// lock; a SKU absent from the map does not exist).
pub(crate) fn plan_orders(orders: &[&OrderRequest], rows: &HashMap<&SkuId, LockedRow>) -> Vec<Decision> {
    let mut left: HashMap<&SkuId, i64> = rows.iter().map(|(sku, row)| (*sku, row.stock)).collect();
    orders
        .iter()
        .map(|order| {
            let lines = order.lines();
            let missing: Vec<SkuId> = lines
                .iter()
                .filter(|(sku, _)| !rows.contains_key(sku))
                .map(|(sku, _)| sku.clone())
                .collect();
            if !missing.is_empty() {
                return Decision::Missing(missing);
            }
            let short: Vec<(&SkuId, i64)> = lines
                .iter()
                .filter(|(sku, units)| left[sku] < *units)
                .map(|(sku, units)| (sku, *units))
                .collect();
            if short.iter().any(|(sku, _)| rows[sku].sharded) {
                return Decision::Alone;
            }
            if !short.is_empty() {
                return Decision::Short(
                    short
                        .into_iter()
                        .map(|(sku, requested)| ShortLine {
                            sku: sku.clone(),
                            requested,
                            available: rows[sku].reported(left[sku]),
                        })
                        .collect(),
                );
            }
            Decision::Apply(
                lines
                    .iter()
                    .map(|(sku, units)| {
                        let stock = left.get_mut(sku).expect("every line's row is in the map");
                        *stock -= units;
                        (*stock, rows[sku].reported(*stock))
                    })
                    .collect(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{OrderId, OrderLine, OrderStrategy, Quantity};
    use crate::error::DeductError;
    use crate::model::ReferenceModel;

    const SKUS: [&str; 4] = ["a", "b", "c", "hot"];

    fn order(n: usize, lines: &[(usize, i64)]) -> OrderRequest {
        let lines = lines
            .iter()
            .map(|(sku, units)| OrderLine {
                sku: SkuId::parse(SKUS[*sku]).unwrap(),
                quantity: Quantity::new(*units).unwrap(),
            })
            .collect();
        OrderRequest::new(
            OrderId::parse(format!("o-{n}")).unwrap(),
            lines,
            OrderStrategy::Coalesced,
        )
        .unwrap()
    }

    fn row(stock: i64) -> LockedRow {
        LockedRow {
            stock,
            bucket_offset: 0,
            sharded: false,
        }
    }

    proptest! {
        /// The batch decides every order exactly as placing them one by one would: the same
        /// successes with the same remaining stock, the same refusals naming the same lines.
        #[test]
        fn a_batch_decides_like_orders_placed_one_by_one(
            stocks in proptest::collection::vec(0i64..6, SKUS.len()),
            missing in 0usize..=SKUS.len(),
            orders in proptest::collection::vec(
                proptest::collection::vec((0usize..SKUS.len(), 1i64..4), 1..4),
                1..24,
            ),
        ) {
            let skus: Vec<SkuId> = SKUS.iter().map(|s| SkuId::parse(*s).unwrap()).collect();
            let mut model = ReferenceModel::new();
            let mut rows = HashMap::new();
            for (index, (sku, stock)) in skus.iter().zip(&stocks).enumerate() {
                // The SKU at `missing` (if any) does not exist.
                if index != missing {
                    model.create_sku(sku, *stock).unwrap();
                    rows.insert(sku, row(*stock));
                }
            }
            let orders: Vec<OrderRequest> =
                orders.iter().enumerate().map(|(n, lines)| order(n, lines)).collect();
            let refs: Vec<&OrderRequest> = orders.iter().collect();
            let decisions = plan_orders(&refs, &rows);
            for (order, decision) in orders.iter().zip(decisions) {
                match (model.place_order(order), decision) {
                    (Ok(receipt), Decision::Apply(after)) => {
                        let remaining: Vec<(i64, i64)> =
                            receipt.lines.iter().map(|l| (l.remaining, l.remaining)).collect();
                        prop_assert_eq!(remaining, after);
                    }
                    (Err(DeductError::OrderShort { lines }), Decision::Short(short)) => {
                        prop_assert_eq!(lines, short);
                    }
                    (Err(DeductError::SkusNotFound { skus }), Decision::Missing(missing)) => {
                        prop_assert_eq!(skus, missing);
                    }
                    (expected, decided) => {
                        prop_assert!(false, "model {:?}, batch {:?}", expected, decided);
                    }
                }
            }
        }
    }

    #[test]
    fn a_short_line_on_a_sharded_row_is_decided_alone() {
        let (a, b) = (SkuId::parse("a").unwrap(), SkuId::parse("b").unwrap());
        let mut rows = HashMap::new();
        rows.insert(&a, row(5));
        rows.insert(
            &b,
            LockedRow {
                stock: 0,
                bucket_offset: 7,
                sharded: true,
            },
        );
        let first = order(0, &[(0, 2)]);
        let second = order(1, &[(0, 1), (1, 1)]);
        let third = order(2, &[(0, 3)]);
        let decisions = plan_orders(&[&first, &second, &third], &rows);
        assert_eq!(decisions[0], Decision::Apply(vec![(3, 3)]));
        assert_eq!(decisions[1], Decision::Alone);
        // The order left to run alone took nothing from the batch's stock.
        assert_eq!(decisions[2], Decision::Apply(vec![(0, 0)]));
    }
}
