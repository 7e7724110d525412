//! The outcome contract, on a real database: a change whose answer is lost after it committed
//! is answered as committed (never as a refusal), exactly once, and its key replays it.
//!
//! The answer is lost through [`Engine::lose_next_answer`]: the write really commits, and the
//! engine is told its connection broke right after. The wire-level version of the same fault
//! (a proxy that drops the server's reply to COMMIT) runs in the PostgreSQL and MariaDB
//! adapters' own tests.

use std::future::Future;
use std::sync::Arc;

use super::{full_ledger, key, qty, sku};
use crate::engine::{Backend, Engine};
use crate::{DeductError, DeductRequest, IdempotencyKey, InventoryStore, RestockRequest, Strategy};

/// Every strategy: a deduction committed but answered with a lost connection is resolved by
/// its key to the committed receipt; the ledger holds exactly one row for the key; a retry
/// with the key replays it. The same for a keyed restock, and for a coalesced batch of
/// several requests whose COMMIT answer is lost.
pub async fn lost_answers_are_resolved<B: Backend>(store: Arc<Engine<B>>, strategy: Strategy) {
    let s = sku(&format!("lost-{}", strategy.as_str()));
    store.create_sku(&s, 100).await.expect("create");
    let k = key(&format!("lost-{}-1", strategy.as_str()));
    store.lose_next_answer(&k);
    let resolved = store
        .deduct(DeductRequest::new(s.clone(), qty(3), strategy).with_idempotency_key(k.clone()))
        .await;
    let resolved = match resolved {
        Ok(receipt) => receipt,
        Err(error) => panic!("a committed deduction whose answer was lost must not be refused: {error:?}"),
    };
    assert_eq!(
        (resolved.remaining, resolved.idempotency_key.clone()),
        (97, k.clone())
    );
    let rows: Vec<_> = full_ledger(&*store, &s)
        .await
        .into_iter()
        .filter(|e| e.idempotency_key.as_deref() == Some(k.as_str()))
        .collect();
    assert_eq!(rows.len(), 1, "exactly one ledger row for the key");
    assert_eq!(rows[0].id, resolved.ledger_id);
    if matches!(strategy, Strategy::Pessimistic | Strategy::NoWait) {
        // A transaction knows its row's id before COMMIT: the row found is its own. (A
        // single statement whose answer was lost cannot tell its own row from an earlier
        // call's under a client's key, and says `replayed: true`.)
        assert!(!resolved.replayed, "this call's own commit is not a replay");
    }
    let replay = store
        .deduct(DeductRequest::new(s.clone(), qty(3), strategy).with_idempotency_key(k))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, resolved.ledger_id);
    assert_eq!(store.stock(&s).await.expect("stock").stock, 97);

    // The same for a restock.
    let r = key(&format!("lost-{}-restock", strategy.as_str()));
    store.lose_next_answer(&r);
    let restocked = store
        .restock(RestockRequest::new(s.clone(), qty(10)).with_idempotency_key(r.clone()))
        .await
        .expect("a committed restock whose answer was lost is answered as committed");
    assert_eq!(restocked.stock_after, 107);
    let again = store
        .restock(RestockRequest::new(s.clone(), qty(10)).with_idempotency_key(r))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.ledger_id, restocked.ledger_id);

    if strategy == Strategy::Coalesced {
        lost_batch_commit(&store, &s).await;
    }
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// Several concurrent coalesced requests, one of whose keys is armed: whichever batch carries
/// it has its COMMIT answer lost, and every request of that batch is resolved together.
async fn lost_batch_commit<B: Backend>(store: &Arc<Engine<B>>, s: &crate::SkuId) {
    const REQUESTS: i64 = 12;
    let before = store.stock(s).await.expect("stock").stock;
    let armed = key("lost-batch-armed");
    store.lose_next_answer(&armed);
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let store = Arc::clone(store);
            // The last one, so that it most likely joins a batch of several.
            let k = if i == REQUESTS - 1 {
                armed.clone()
            } else {
                key(&format!("lost-batch-{i}"))
            };
            let request = DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced).with_idempotency_key(k);
            tokio::spawn(async move { store.deduct(request).await })
        })
        .collect();
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => {}
            Err(error) => panic!("a request of a committed batch must not be refused: {error:?}"),
        }
    }
    let after = store.stock(s).await.expect("stock").stock;
    assert_eq!(before - after, REQUESTS, "every request applied exactly once");
    let keyed = full_ledger(&**store, s)
        .await
        .into_iter()
        .filter(|e| {
            e.idempotency_key
                .as_deref()
                .is_some_and(|k| k.starts_with("lost-batch-"))
        })
        .count();
    assert_eq!(
        i64::try_from(keyed).expect("count"),
        REQUESTS,
        "one ledger row per request"
    );
}

/// Every change carries a key: a generated one when the caller sent none, returned in the
/// receipt and stored in the ledger row. A lost answer to an unkeyed deduction is resolved by
/// that generated key.
pub async fn every_change_carries_a_key<B: Backend>(store: Arc<Engine<B>>) {
    let s = sku("generated-keys");
    store.create_sku(&s, 10).await.expect("create");
    let receipt = store
        .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Guarded))
        .await
        .expect("deduct");
    assert!(receipt.idempotency_key.looks_generated(), "{receipt:?}");
    let restock = store
        .restock(RestockRequest::new(s.clone(), qty(1)))
        .await
        .expect("restock");
    assert!(restock.idempotency_key.looks_generated(), "{restock:?}");
    assert_ne!(receipt.idempotency_key, restock.idempotency_key);
    let ledger = full_ledger(&*store, &s).await;
    let keys: Vec<_> = ledger.iter().map(|e| e.idempotency_key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            Some(receipt.idempotency_key.as_str().to_owned()),
            Some(restock.idempotency_key.as_str().to_owned())
        ]
    );
    // A refusal consumes no key: the same client key succeeds later.
    let k = key("generated-keys-refused-first");
    let refused = store
        .deduct(DeductRequest::new(s.clone(), qty(50), Strategy::Guarded).with_idempotency_key(k.clone()))
        .await;
    assert!(
        matches!(refused, Err(DeductError::InsufficientStock { .. })),
        "{refused:?}"
    );
    assert!(refused.as_ref().err().is_some_and(DeductError::nothing_changed));
    let unused = key("generated-keys-never-used");
    let before = store
        .committed_keys(&[k.clone(), unused.clone()])
        .await
        .expect("committed keys");
    assert!(before.is_empty(), "a refused key is not committed: {before:?}");
    store
        .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Guarded).with_idempotency_key(k.clone()))
        .await
        .expect("the key is free after a refusal");

    // `committed_keys` names exactly the committed changes: keyed rows, and orders by id.
    let placed = super::orders::order("generated-keys-order", &[(&s, 1)], crate::OrderStrategy::Guarded);
    store.place_order(placed.clone()).await.expect("order");
    let order_key = placed.order_id().idempotency_key();
    let asked = [
        receipt.idempotency_key.clone(),
        unused,
        restock.idempotency_key.clone(),
        k,
        order_key,
    ];
    let committed = store.committed_keys(&asked).await.expect("committed keys");
    let expected: Vec<_> = asked
        .iter()
        .filter(|key| key.as_str() != "generated-keys-never-used")
        .cloned()
        .collect();
    assert_eq!(committed, expected);
    let too_many = vec![receipt.idempotency_key.clone(); crate::COMMITTED_KEYS_MAX + 1];
    assert!(matches!(
        store.committed_keys(&too_many).await,
        Err(DeductError::InvalidInput(_))
    ));
}

/// Where a wire-level cut falls, relative to the statement that commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireCut {
    /// The server received and applied it (committed); its reply is dropped and the
    /// connection closed.
    AfterReply,
    /// The connection is closed before it reaches the server: nothing committed.
    BeforeSend,
}

/// The outcome contract on the wire: a proxy between the store and its database cuts the
/// connection at the statement that commits the deduction carrying `key` (the adapter's
/// `arm` knows which bytes that is: COMMIT, or the single-statement write whose parameters
/// carry the key). `arm` returns a future that says whether the cut fired.
///
/// After the server applied it, the answer is the committed receipt (or `OutcomeUnknown`
/// naming the key), never a refusal; the ledger holds exactly one row for the key, and a
/// retry with the key replays it. When the cut falls before the statement reached the
/// server, the engine finds the key absent and applies the deduction once.
pub async fn lost_commit_on_the_wire<B, A, F>(store: Arc<Engine<B>>, strategy: Strategy, mut arm: A)
where
    B: Backend,
    A: FnMut(&IdempotencyKey, WireCut) -> F,
    F: Future<Output = bool>,
{
    let s = sku(&format!("wire-{}", strategy.as_str()));
    store.create_sku(&s, 50).await.expect("create");
    let mut expected_stock = 50;
    for (round, cut) in [WireCut::AfterReply, WireCut::AfterReply, WireCut::BeforeSend]
        .into_iter()
        .enumerate()
    {
        let k = key(&format!("wire-{}-{round}", strategy.as_str()));
        let fired = arm(&k, cut);
        let answer = store
            .deduct(DeductRequest::new(s.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
            .await;
        assert!(fired.await, "round {round}: the cut never fired ({cut:?})");
        match &answer {
            Ok(receipt) => assert_eq!(receipt.idempotency_key, k),
            Err(DeductError::OutcomeUnknown { idempotency_key, .. }) => {
                assert_eq!(
                    idempotency_key.as_ref(),
                    Some(&k),
                    "the unknown outcome names its key"
                );
            }
            Err(error) => panic!("round {round} ({cut:?}): a lost COMMIT answered {error:?}"),
        }
        expected_stock -= 2;
        let replay = store
            .deduct(DeductRequest::new(s.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
            .await
            .expect("the retry with the key replays or applies exactly once");
        let rows: Vec<_> = full_ledger(&*store, &s)
            .await
            .into_iter()
            .filter(|e| e.idempotency_key.as_deref() == Some(k.as_str()))
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "round {round} ({cut:?}): one ledger row for the key"
        );
        assert_eq!(replay.ledger_id, rows[0].id);
        if let Ok(receipt) = answer {
            assert_eq!(
                receipt.ledger_id, rows[0].id,
                "the answer names the committed row"
            );
        }
        assert_eq!(store.stock(&s).await.expect("stock").stock, expected_stock);
    }
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// A coalesced batch of several requests whose COMMIT answer is lost on the wire: every
/// request of the batch is resolved together, applied exactly once. `store` must batch
/// concurrent requests (a `max_wait` of some milliseconds); `arm_commit` cuts after the
/// server applied the batch's committing write (its COMMIT, or the self-contained batch
/// statement where the backend sends one).
pub async fn lost_batch_commit_on_the_wire<B, A, F>(store: Arc<Engine<B>>, arm_commit: A)
where
    B: Backend,
    A: FnOnce() -> F,
    F: Future<Output = bool>,
{
    const REQUESTS: i64 = 6;
    let s = sku("wire-batch");
    store.create_sku(&s, 100).await.expect("create");
    let fired = arm_commit();
    let tasks: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let store = Arc::clone(&store);
            let request = DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced)
                .with_idempotency_key(key(&format!("wire-batch-{i}")));
            tokio::spawn(async move { store.deduct(request).await })
        })
        .collect();
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) | Err(DeductError::OutcomeUnknown { .. }) => {}
            Err(error) => panic!("a request of a batch whose COMMIT answer was lost answered {error:?}"),
        }
    }
    assert!(fired.await, "the cut never fired");
    let batches = store
        .coalescer()
        .stats()
        .batches
        .load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        batches < u64::try_from(REQUESTS).expect("count"),
        "the requests were not batched ({batches} batches)"
    );
    let ledger = full_ledger(&*store, &s).await;
    for i in 0..REQUESTS {
        let k = format!("wire-batch-{i}");
        let rows = ledger
            .iter()
            .filter(|e| e.idempotency_key.as_deref() == Some(k.as_str()))
            .count();
        assert_eq!(rows, 1, "request {i}: exactly one ledger row");
    }
    assert_eq!(store.stock(&s).await.expect("stock").stock, 100 - REQUESTS);
}
