//! Client retries the engine does not remember. A coalesced batch writes its client keys
//! without looking them up first (`engine/recent_keys.rs`): a key committed by another
//! instance, before a restart, or under another reason is caught by the ledger's unique
//! index, and the batch runs again with a lookup. These tests check that every answer stays
//! true on that path: a retry replays its first receipt while stock lasts and after sell-out,
//! and a key used by a restock is refused.

use std::sync::Arc;

use super::{full_ledger, key, qty, sku};
use crate::{DeductError, DeductRequest, InventoryStore, Receipt, RestockRequest, Strategy};

/// Keys committed through `committer` are retried through `retrier`, mixed into `Coalesced`
/// batches with new requests: first while stock lasts, then after sell-out, when a plan made
/// without the keys would refuse them. `retrier` must not remember the keys: another
/// instance on the same database, or the same store with `recent_keys_max = 0`.
pub async fn retries_of_unremembered_keys<S: InventoryStore>(committer: Arc<S>, retrier: Arc<S>) {
    const COMMITTED: usize = 16;
    const NEW: usize = 32;
    let s = sku("retry-unremembered");
    committer.create_sku(&s, 40).await.expect("create");
    let mut originals = Vec::new();
    for i in 0..COMMITTED {
        let request = DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced)
            .with_idempotency_key(key(&format!("committed-{i}")));
        originals.push(committer.deduct(request).await.expect("first commit"));
    }
    // 24 units left for 32 new requests of one unit, beside half the retries.
    let (early, late) = originals.split_at(COMMITTED / 2);
    let requests = early.iter().map(retry_of).chain((0..NEW).map(|i| {
        DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced)
            .with_idempotency_key(key(&format!("new-{i}")))
    }));
    let answers = all_at_once(&retrier, requests.collect()).await;
    let (retried, new) = answers.split_at(early.len());
    check_replays(early, retried);
    let applied = new.iter().filter(|answer| answer.is_ok()).count();
    assert_eq!(applied, 24, "new requests take exactly the stock left: {new:?}");
    for answer in new {
        match answer {
            Ok(receipt) => assert!(!receipt.replayed, "a new key applied: {receipt:?}"),
            Err(DeductError::InsufficientStock { .. }) => {}
            Err(other) => panic!("a new request got {other:?}"),
        }
    }
    // Sold out: the other retries, still beside new requests, must replay, not be refused.
    let requests = late.iter().map(retry_of).chain((0..8).map(|i| {
        DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced)
            .with_idempotency_key(key(&format!("late-new-{i}")))
    }));
    let answers = all_at_once(&retrier, requests.collect()).await;
    let (retried, new) = answers.split_at(late.len());
    check_replays(late, retried);
    assert!(
        new.iter()
            .all(|answer| matches!(answer, Err(DeductError::InsufficientStock { .. }))),
        "sold out: {new:?}"
    );
    assert_eq!(retrier.stock(&s).await.expect("stock").stock, 0);
    assert_eq!(
        full_ledger(&*retrier, &s).await.len(),
        COMMITTED + 24,
        "one ledger row per applied request, none for a retry"
    );
}

/// A key a restock used, sent with a `Coalesced` deduction among others, is refused as reused
/// and changes nothing; the others apply.
pub async fn a_restock_key_is_refused_in_a_batch<S: InventoryStore>(store: Arc<S>) {
    let s = sku("restock-key-in-batch");
    store.create_sku(&s, 0).await.expect("create");
    let used = key("restock-key");
    store
        .restock(RestockRequest::new(s.clone(), qty(20)).with_idempotency_key(used.clone()))
        .await
        .expect("restock");
    let requests = std::iter::once(
        DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced).with_idempotency_key(used),
    )
    .chain((0..15).map(|i| {
        DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced)
            .with_idempotency_key(key(&format!("beside-restock-{i}")))
    }))
    .collect();
    let answers = all_at_once(&store, requests).await;
    assert!(
        matches!(answers[0], Err(DeductError::IdempotencyKeyReused)),
        "the restock's key: {:?}",
        answers[0]
    );
    assert!(answers[1..].iter().all(Result::is_ok), "the others: {answers:?}");
    assert_eq!(store.stock(&s).await.expect("stock").stock, 5);
    assert_eq!(
        full_ledger(&*store, &s).await.len(),
        16,
        "the restock and 15 deductions"
    );
}

fn retry_of(receipt: &Receipt) -> DeductRequest {
    DeductRequest::new(receipt.sku.clone(), receipt.quantity, Strategy::Coalesced)
        .with_idempotency_key(receipt.idempotency_key.clone())
}

fn check_replays(originals: &[Receipt], retried: &[Result<Receipt, DeductError>]) {
    for (original, answer) in originals.iter().zip(retried) {
        let replayed = answer
            .as_ref()
            .unwrap_or_else(|error| panic!("the retry of {} got {error:?}", original.idempotency_key));
        assert!(replayed.replayed, "a retry is a replay: {replayed:?}");
        assert_eq!(
            (replayed.ledger_id, replayed.remaining),
            (original.ledger_id, original.remaining),
            "a retry answers its first receipt"
        );
    }
}

/// Sends every request at once (each on its own task) and answers them in order.
async fn all_at_once<S: InventoryStore>(
    store: &Arc<S>,
    requests: Vec<DeductRequest>,
) -> Vec<Result<Receipt, DeductError>> {
    let tasks: Vec<_> = requests
        .into_iter()
        .map(|request| {
            let store = Arc::clone(store);
            tokio::spawn(async move { store.deduct(request).await })
        })
        .collect();
    let mut answers = Vec::with_capacity(tasks.len());
    for task in tasks {
        answers.push(task.await.expect("join"));
    }
    answers
}
