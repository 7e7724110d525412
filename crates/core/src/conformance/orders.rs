//! Multi-line orders on a real database: all lines or none, duplicate lines summed, exact
//! refusals naming every short line, the order id as idempotency key, lost answers resolved
//! by it, and canonical lock order (opposite line orders never deadlock).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use super::{full_ledger, qty, sku};
use crate::engine::{Backend, Engine};
use crate::{
    DeductError, DeductRequest, InventoryStore, LedgerReason, OrderId, OrderLine, OrderRequest,
    OrderStrategy, RetryCause, ShortLine, SkuId, Strategy,
};

fn order_id(raw: &str) -> OrderId {
    OrderId::parse(raw).expect("test order id")
}

/// A test order: `id`, one line per `(sku, units)`, `strategy`; panics on invalid input.
pub fn order(id: &str, lines: &[(&SkuId, i64)], strategy: OrderStrategy) -> OrderRequest {
    let lines = lines
        .iter()
        .map(|(sku, units)| OrderLine {
            sku: (*sku).clone(),
            quantity: qty(*units),
        })
        .collect();
    OrderRequest::new(order_id(id), lines, strategy).expect("valid test order")
}

async fn stock_of<S: InventoryStore>(store: &S, sku: &SkuId) -> i64 {
    store.stock(sku).await.expect("stock").stock
}

/// Sequential semantics of one order strategy.
pub async fn order_semantics<S: InventoryStore>(store: &S, strategy: OrderStrategy) {
    let tag = strategy.as_str();
    let (a, b, c) = (
        sku(&format!("oa-{tag}")),
        sku(&format!("ob-{tag}")),
        sku(&format!("oc-{tag}")),
    );
    for (s, units) in [(&a, 10), (&b, 5), (&c, 3)] {
        store.create_sku(s, units).await.expect("create");
    }

    // Duplicate lines are summed: a:2 + a:3 is one line of 5.
    let first = store
        .place_order(order(
            &format!("o1-{tag}"),
            &[(&a, 2), (&b, 1), (&a, 3)],
            strategy,
        ))
        .await
        .expect("order fits");
    assert!(!first.replayed);
    let lines: Vec<_> = first
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity, l.remaining))
        .collect();
    assert_eq!(lines, vec![(a.clone(), 5, 5), (b.clone(), 1, 4)]);
    assert_eq!((stock_of(store, &a).await, stock_of(store, &b).await), (5, 4));
    for line in &first.lines {
        let rows = full_ledger(store, &line.sku).await;
        assert_eq!(rows.len(), 1, "one ledger row per line");
        let row = &rows[0];
        assert_eq!(
            (
                row.id,
                row.delta,
                row.stock_after,
                row.reason,
                row.idempotency_key.as_deref()
            ),
            (
                line.ledger_id,
                -line.quantity,
                line.remaining,
                LedgerReason::Order,
                None
            )
        );
    }

    // The same id and lines, in another line order: the first receipt.
    let replay = store
        .place_order(order(&format!("o1-{tag}"), &[(&b, 1), (&a, 5)], strategy))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.lines, first.lines);
    // The same id with other lines: a mismatch naming the lines, nothing changed.
    let reused = store
        .place_order(order(&format!("o1-{tag}"), &[(&a, 5), (&c, 1)], strategy))
        .await;
    match reused {
        Err(DeductError::OrderMismatch { mismatches }) => {
            let named: Vec<_> = mismatches
                .iter()
                .map(|m| (m.sku.as_str(), m.stored, m.given))
                .collect();
            assert_eq!(named, vec![(b.as_str(), 1, 0), (c.as_str(), 0, 1)]);
        }
        other => panic!("expected OrderMismatch, got {other:?}"),
    }

    // Two short lines: both named, with what they had; nothing changed.
    let short = store
        .place_order(order(
            &format!("o2-{tag}"),
            &[(&c, 4), (&b, 1), (&a, 6)],
            strategy,
        ))
        .await;
    match short {
        Err(DeductError::OrderShort { lines }) => assert_eq!(
            lines,
            vec![
                ShortLine {
                    sku: a.clone(),
                    requested: 6,
                    available: 5
                },
                ShortLine {
                    sku: c.clone(),
                    requested: 4,
                    available: 3
                },
            ]
        ),
        other => panic!("expected OrderShort, got {other:?}"),
    }
    assert_eq!(
        (
            stock_of(store, &a).await,
            stock_of(store, &b).await,
            stock_of(store, &c).await
        ),
        (5, 4, 3),
        "a refused order changes nothing"
    );
    assert_eq!(full_ledger(store, &c).await.len(), 0);

    // Unknown SKUs: every one named; nothing changed.
    let (y, z) = (sku(&format!("oy-{tag}")), sku(&format!("oz-{tag}")));
    match store
        .place_order(order(
            &format!("o3-{tag}"),
            &[(&z, 1), (&a, 1), (&y, 1)],
            strategy,
        ))
        .await
    {
        Err(DeductError::SkusNotFound { skus }) => assert_eq!(skus, vec![y.clone(), z.clone()]),
        other => panic!("expected SkusNotFound, got {other:?}"),
    }
    assert_eq!(stock_of(store, &a).await, 5);

    // A refused id is not claimed: the same id can be placed with lines that fit.
    let later = store
        .place_order(order(&format!("o2-{tag}"), &[(&c, 3), (&a, 5)], strategy))
        .await
        .expect("a refused id is free");
    assert!(!later.replayed);
    assert_eq!((stock_of(store, &a).await, stock_of(store, &c).await), (0, 0));

    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// An order committed but answered with a lost connection is answered as committed, and
/// its id replays it.
pub async fn lost_order_answers_are_resolved<B: Backend>(store: Arc<Engine<B>>, strategy: OrderStrategy) {
    let tag = strategy.as_str();
    let (a, b) = (sku(&format!("la-{tag}")), sku(&format!("lb-{tag}")));
    store.create_sku(&a, 10).await.expect("create");
    store.create_sku(&b, 10).await.expect("create");
    let id = format!("lost-order-{tag}");
    store.lose_next_answer(&order_id(&id).idempotency_key());
    let resolved = match store.place_order(order(&id, &[(&a, 2), (&b, 3)], strategy)).await {
        Ok(receipt) => receipt,
        Err(error) => panic!("a committed order whose answer was lost must not be refused: {error:?}"),
    };
    assert!(
        !resolved.replayed,
        "this call's own commit, found after its answer was lost, is not a replay"
    );
    assert_eq!(
        resolved.lines.iter().map(|l| l.remaining).collect::<Vec<_>>(),
        vec![8, 7]
    );
    assert_eq!(full_ledger(&*store, &a).await.len(), 1, "applied exactly once");
    let replay = store
        .place_order(order(&id, &[(&a, 2), (&b, 3)], strategy))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.lines, resolved.lines);
    assert_eq!((stock_of(&*store, &a).await, stock_of(&*store, &b).await), (8, 7));
}

/// `tasks` tasks place `orders` two-line orders over the same two SKUs, half of them with
/// the lines in the opposite order, while the SKUs have room for all. No error reaches a
/// caller, and none needed a deadlock retry: canonical lock order makes deadlocks impossible,
/// and a retry would only hide one.
pub async fn opposite_orders_never_deadlock<B: Backend>(
    store: Arc<Engine<B>>,
    strategy: OrderStrategy,
    tasks: usize,
    orders: usize,
) {
    let tag = strategy.as_str();
    let (x, y) = (sku(&format!("ox-{tag}")), sku(&format!("oy-{tag}")));
    let units = i64::try_from(orders).expect("orders fit i64");
    store.create_sku(&x, units).await.expect("create");
    store.create_sku(&y, 2 * units).await.expect("create");
    let deadlocks_before = deadlock_retries(&store);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, next, x, y) = (Arc::clone(&store), Arc::clone(&next), x.clone(), y.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= orders as u64 {
                    return;
                }
                let lines: [(&SkuId, i64); 2] = if task % 2 == 0 {
                    [(&x, 1), (&y, 2)]
                } else {
                    [(&y, 2), (&x, 1)]
                };
                let placed = store
                    .place_order(order(&format!("opp-{tag}-{n}"), &lines, strategy))
                    .await;
                if let Err(error) = placed {
                    panic!("order {n} failed: {error:?}");
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("order task");
    }
    assert_eq!((stock_of(&*store, &x).await, stock_of(&*store, &y).await), (0, 0));
    assert_eq!(
        deadlock_retries(&store) - deadlocks_before,
        0,
        "canonical lock order needs no deadlock retries"
    );
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

fn deadlock_retries<B: Backend>(store: &Engine<B>) -> u64 {
    store
        .stats()
        .retries()
        .filter(|(cause, _)| *cause == RetryCause::Deadlock)
        .map(|(_, count)| count)
        .sum()
}

/// Orders (hot SKU plus a cold one) race single deductions of the hot SKU until it sells
/// out: stock never goes negative, every order applied all its lines or none, and the
/// ledger accounts for every unit.
pub async fn orders_race_deductions<S: InventoryStore>(store: Arc<S>, strategy: OrderStrategy, tasks: usize) {
    let tag = strategy.as_str();
    let hot = sku(&format!("race-hot-{tag}"));
    let hot_units = 120;
    store.create_sku(&hot, hot_units).await.expect("create");
    let colds: Vec<SkuId> = (0..4).map(|i| sku(&format!("race-cold-{tag}-{i}"))).collect();
    for cold in &colds {
        store.create_sku(cold, 1_000).await.expect("create");
    }
    let ordered = Arc::new(AtomicI64::new(0));
    let deducted = Arc::new(AtomicI64::new(0));
    let cold_taken: Arc<Vec<AtomicI64>> = Arc::new(colds.iter().map(|_| AtomicI64::new(0)).collect());
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (store, hot, colds) = (Arc::clone(&store), hot.clone(), colds.clone());
        let (ordered, deducted, cold_taken) = (
            Arc::clone(&ordered),
            Arc::clone(&deducted),
            Arc::clone(&cold_taken),
        );
        handles.push(tokio::spawn(async move {
            for n in 0..200 {
                if task % 2 == 0 {
                    let cold = (task / 2 + n) % colds.len();
                    let id = format!("race-{tag}-{task}-{n}");
                    match store
                        .place_order(order(&id, &[(&hot, 2), (&colds[cold], 1)], strategy))
                        .await
                    {
                        Ok(_) => {
                            ordered.fetch_add(2, Ordering::Relaxed);
                            cold_taken[cold].fetch_add(1, Ordering::Relaxed);
                        }
                        Err(DeductError::OrderShort { lines }) => {
                            assert!(lines.iter().all(|l| l.sku == hot), "only the hot SKU runs short");
                            return;
                        }
                        Err(error) => panic!("order failed: {error:?}"),
                    }
                } else {
                    let request = DeductRequest::new(hot.clone(), qty(1), Strategy::Guarded);
                    match store.deduct(request).await {
                        Ok(_) => {
                            deducted.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(DeductError::InsufficientStock { .. }) => return,
                        Err(error) => panic!("deduction failed: {error:?}"),
                    }
                }
            }
        }));
    }
    for handle in handles {
        handle.await.expect("race task");
    }
    let taken = ordered.load(Ordering::Relaxed) + deducted.load(Ordering::Relaxed);
    let left = stock_of(&*store, &hot).await;
    assert!(left >= 0);
    assert_eq!(
        hot_units - taken,
        left,
        "every acknowledged unit, and only those, left the hot SKU"
    );
    assert!(
        left < 2,
        "sold out: an order of 2 or a deduction of 1 would have fit"
    );
    for (cold, taken) in colds.iter().zip(cold_taken.iter()) {
        assert_eq!(
            1_000 - taken.load(Ordering::Relaxed),
            stock_of(&*store, cold).await,
            "an order's cold line applied exactly when the order did"
        );
    }
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// On a store that spreads a SKU over `Sharded` buckets at its first `Sharded` deduction: an
/// order for everything left takes the units from the buckets (gathered under the order's
/// locks), and the audit holds.
pub async fn orders_take_sharded_stock<S: InventoryStore>(store: &S, strategy: OrderStrategy) {
    let tag = strategy.as_str();
    let (spread, plain) = (sku(&format!("spread-{tag}")), sku(&format!("plain-{tag}")));
    store.create_sku(&spread, 10).await.expect("create");
    store.create_sku(&plain, 3).await.expect("create");
    store
        .deduct(DeductRequest::new(spread.clone(), qty(1), Strategy::Sharded))
        .await
        .expect("sharded deduction spreads the sku");
    let placed = store
        .place_order(order(
            &format!("spread-{tag}"),
            &[(&spread, 9), (&plain, 3)],
            strategy,
        ))
        .await
        .expect("the buckets' units count");
    assert_eq!(placed.lines[1].remaining, 0);
    assert_eq!(
        (stock_of(store, &spread).await, stock_of(store, &plain).await),
        (0, 0)
    );
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// Rows written before the orders migration, in SQL every adapter's older schema takes: a SKU
/// at 7 of 10 with two keyed deductions.
pub const PRE_ORDERS_SEED: [&str; 3] = [
    "INSERT INTO inventory (sku, stock, initial_stock) VALUES ('old', 7, 10)",
    "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES ('old', -1, 9, 'deduct', 'k1')",
    "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES ('old', -2, 7, 'deduct', 'k2')",
];

/// After [`PRE_ORDERS_SEED`] ran on the schema before the orders migration, and `store` then
/// migrated: the rows are all there, the key still replays, the audit passes, and orders work.
pub async fn seeded_data_carries_forward<S: InventoryStore>(store: &S) {
    let old = sku("old");
    let rows = full_ledger(store, &old).await;
    let kept: Vec<_> = rows
        .iter()
        .map(|r| (r.delta, r.stock_after, r.idempotency_key.as_deref()))
        .collect();
    assert_eq!(kept, vec![(-1, 9, Some("k1")), (-2, 7, Some("k2"))]);
    assert!(store.audit().await.expect("audit").is_clean());
    let replay = store
        .deduct(
            DeductRequest::new(old.clone(), qty(2), Strategy::Guarded).with_idempotency_key(super::key("k2")),
        )
        .await
        .expect("an old key replays");
    assert!(replay.replayed);
    store
        .place_order(order("after-migration", &[(&old, 3)], OrderStrategy::Locked))
        .await
        .expect("orders work after migrating");
    assert_eq!(stock_of(store, &old).await, 4);
    assert!(store.audit().await.expect("audit").is_clean());
}
