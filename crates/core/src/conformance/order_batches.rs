//! The `Coalesced` order path on a real database: concurrent orders sharing a hot SKU are
//! placed in shared transactions, and every order is still answered exactly as if it had
//! been placed alone (placed, replayed, refused with its own short lines, a mismatch, an
//! unknown SKU), including orders whose batch's COMMIT answer was lost.

use std::collections::HashMap;
use std::sync::Arc;

use super::sku;
use crate::engine::{Backend, Engine};
use crate::{DeductError, InventoryStore, OrderId, OrderReceipt, OrderRequest, OrderStrategy, SkuId};

fn order(id: &str, lines: &[(&SkuId, i64)]) -> OrderRequest {
    super::orders::order(id, lines, OrderStrategy::Coalesced)
}

/// Places every order at once (all tasks released together, so batches form) and returns
/// each answer with its order.
async fn place_all<B: Backend>(
    store: &Arc<Engine<B>>,
    orders: Vec<OrderRequest>,
) -> Vec<(OrderRequest, Result<OrderReceipt, DeductError>)> {
    let start = Arc::new(tokio::sync::Barrier::new(orders.len()));
    let handles: Vec<_> = orders
        .into_iter()
        .map(|order| {
            let (store, start) = (Arc::clone(store), Arc::clone(&start));
            tokio::spawn(async move {
                start.wait().await;
                let answer = store.place_order(order.clone()).await;
                (order, answer)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(handles.len());
    for handle in handles {
        answers.push(handle.await.expect("order task"));
    }
    answers
}

async fn stock_of<S: InventoryStore>(store: &S, sku: &SkuId) -> i64 {
    store.stock(sku).await.expect("stock").stock
}

/// Concurrent coalesced orders: placements, in-batch repeats of an id, an id reused with
/// other lines, unknown SKUs and lost COMMIT answers in one wave with room for all; then a
/// wave that sells a SKU out. Every answer is the one a lone placement would give, the stock
/// and the ledger account for exactly the orders answered placed, and batches really formed.
pub async fn coalesced_order_batches<B: Backend>(store: Arc<Engine<B>>) {
    let hot = sku("batch-hot");
    let colds: Vec<SkuId> = (0..4).map(|i| sku(&format!("batch-cold-{i}"))).collect();
    let missing = sku("batch-missing");
    store.create_sku(&hot, 1_000).await.expect("create");
    for cold in &colds {
        store.create_sku(cold, 1_000).await.expect("create");
    }
    let batches_before = store
        .order_coalescer()
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    let requests_before = store
        .order_coalescer()
        .stats()
        .batched_requests
        .load(std::sync::atomic::Ordering::Relaxed);

    // Placed before the wave: inside it, these ids fail their batch's claim, and the batch's
    // next attempt must answer them as replays (or a mismatch) without losing the others.
    let mut earlier = HashMap::new();
    for (n, cold) in colds.iter().enumerate().take(2) {
        let id = format!("pre-{n}");
        let receipt = store
            .place_order(order(&id, &[(&hot, 1), (cold, 1)]))
            .await
            .expect("placed alone");
        earlier.insert(id, receipt);
    }

    // Wave 1: room for every order.
    let mut orders = Vec::new();
    for _ in 0..2 {
        for (n, cold) in colds.iter().enumerate().take(2) {
            orders.push(order(&format!("pre-{n}"), &[(&hot, 1), (cold, 1)]));
        }
    }
    orders.push(order("pre-1", &[(&hot, 5)]));
    for n in 0..48 {
        orders.push(order(&format!("b-{n}"), &[(&hot, 1), (&colds[n % 4], 2)]));
    }
    for n in 0..6 {
        // The same id and lines again, in the same wave: one placement, the rest replays.
        orders.push(order(&format!("b-{n}"), &[(&hot, 1), (&colds[n % 4], 2)]));
    }
    for n in 6..8 {
        // The same id with other lines: whichever comes second is a mismatch.
        orders.push(order(&format!("b-{n}"), &[(&hot, 3)]));
    }
    for n in 0..4 {
        orders.push(order(&format!("bm-{n}"), &[(&hot, 1), (&missing, 1)]));
    }
    for n in 40..44 {
        store.lose_next_answer(&OrderId::parse(format!("b-{n}")).unwrap().idempotency_key());
    }
    let answers = place_all(&store, orders).await;

    let mut placed: HashMap<String, OrderReceipt> = HashMap::new();
    let mut replays = Vec::new();
    for (order, answer) in &answers {
        let id = order.order_id().as_str().to_owned();
        if let Some(first) = earlier.get(&id) {
            match answer {
                Ok(receipt) => {
                    assert!(receipt.replayed, "{id} was placed before the wave");
                    assert_eq!(receipt.lines, first.lines, "a replay answers the first receipt");
                }
                Err(DeductError::OrderMismatch { .. }) => assert_eq!(order.lines().len(), 1),
                Err(error) => panic!("{id} failed: {error:?}"),
            }
            continue;
        }
        match answer {
            Ok(receipt) if receipt.replayed => replays.push((id, receipt.clone())),
            Ok(receipt) => {
                assert!(
                    placed.insert(id.clone(), receipt.clone()).is_none(),
                    "order {id} was placed twice"
                );
            }
            Err(DeductError::OrderMismatch { .. }) => {
                assert!(
                    ["b-6", "b-7"].contains(&id.as_str()),
                    "unexpected mismatch for {id}"
                );
            }
            Err(DeductError::SkusNotFound { skus }) => {
                assert!(id.starts_with("bm-"), "unexpected unknown SKU for {id}");
                assert_eq!(skus, &vec![missing.clone()]);
            }
            Err(error) => panic!("order {id} failed with room for all: {error:?}"),
        }
    }
    for n in 0..48 {
        assert!(placed.contains_key(&format!("b-{n}")), "b-{n} was not placed");
    }
    assert_eq!(placed.len(), 48, "exactly the distinct ids that fit were placed");
    for (id, replay) in &replays {
        assert_eq!(
            replay.lines, placed[id].lines,
            "a replay answers the first receipt"
        );
    }
    placed.extend(earlier);
    let hot_taken: i64 = placed
        .values()
        .flat_map(|receipt| receipt.lines.iter())
        .filter(|line| line.sku == hot)
        .map(|line| line.quantity)
        .sum();
    assert_eq!(stock_of(&*store, &hot).await, 1_000 - hot_taken);
    for cold in &colds {
        let taken: i64 = placed
            .values()
            .flat_map(|receipt| receipt.lines.iter())
            .filter(|line| &line.sku == cold)
            .map(|line| line.quantity)
            .sum();
        assert_eq!(stock_of(&*store, cold).await, 1_000 - taken);
    }
    let stats = store.order_coalescer().stats();
    let batches = stats.batches.load(std::sync::atomic::Ordering::Relaxed) - batches_before;
    let requests = stats.batched_requests.load(std::sync::atomic::Ordering::Relaxed) - requests_before;
    assert!(
        requests > batches,
        "no batch carried two orders ({requests} orders in {batches} batches)"
    );

    // Wave 2: 20 units for 36 one-unit orders: exactly 20 placed, the rest refused short.
    let scarce = sku("batch-scarce");
    store.create_sku(&scarce, 20).await.expect("create");
    let orders = (0..36)
        .map(|n| order(&format!("s-{n}"), &[(&scarce, 1), (&colds[n % 4], 1)]))
        .collect();
    let answers = place_all(&store, orders).await;
    let mut sold = 0;
    for (order, answer) in &answers {
        match answer {
            Ok(receipt) => {
                assert!(!receipt.replayed);
                sold += 1;
            }
            Err(DeductError::OrderShort { lines }) => {
                assert_eq!(lines.len(), 1, "only the scarce line runs short: {lines:?}");
                assert_eq!(lines[0].sku, scarce);
                assert_eq!(lines[0].available, 0);
            }
            Err(error) => panic!("order {} failed: {error:?}", order.order_id()),
        }
    }
    assert_eq!(sold, 20, "every unit sold, none twice");
    assert_eq!(stock_of(&*store, &scarce).await, 0);

    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}
