//! Single requests, one at a time: exact results, refusals that change nothing, replay.

use super::{full_ledger, key, qty, sku};
use crate::{
    DeductError, DeductRequest, InvalidInput, InventoryStore, LedgerPage, LedgerReason, RestockRequest,
    STOCK_MAX, Strategy,
};

/// Exact results of single requests: remaining stock, refusals that change nothing,
/// unknown SKUs, invalid input, idempotent replay and key reuse, restock, audit.
pub async fn sequential_semantics<S: InventoryStore>(store: &S, strategy: Strategy) {
    let prefix = format!("seq-{}", strategy.as_str());
    let a = sku(&format!("{prefix}-a"));
    assert_eq!(store.create_sku(&a, 10).await.expect("create").stock, 10);
    assert!(matches!(
        store.create_sku(&a, 5).await,
        Err(DeductError::AlreadyExists)
    ));
    assert!(matches!(
        store.create_sku(&sku(&format!("{prefix}-neg")), -1).await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert!(matches!(
        store
            .create_sku(&sku(&format!("{prefix}-big")), STOCK_MAX + 1)
            .await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert!(matches!(
        store.stock(&sku(&format!("{prefix}-neg"))).await,
        Err(DeductError::NotFound)
    ));

    let first = store
        .deduct(DeductRequest::new(a.clone(), qty(3), strategy))
        .await
        .expect("deduct 3");
    assert_eq!(
        (first.remaining, first.replayed, first.quantity),
        (7, false, qty(3))
    );
    assert!(first.attempts >= 1);
    assert!(
        first.idempotency_key.looks_generated(),
        "an unkeyed deduction carries a generated key: {:?}",
        first.idempotency_key
    );

    let refused = store
        .deduct(DeductRequest::new(a.clone(), qty(8), strategy))
        .await;
    assert!(
        matches!(
            refused,
            Err(DeductError::InsufficientStock {
                requested: 8,
                available: 7
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        store.stock(&a).await.expect("stock").stock,
        7,
        "a refusal changes nothing"
    );

    let last = store
        .deduct(DeductRequest::new(a.clone(), qty(7), strategy))
        .await
        .expect("deduct 7");
    assert_eq!(last.remaining, 0);
    assert!(last.ledger_id > first.ledger_id);
    let empty = store
        .deduct(DeductRequest::new(a.clone(), qty(1), strategy))
        .await;
    assert!(matches!(
        empty,
        Err(DeductError::InsufficientStock {
            requested: 1,
            available: 0
        })
    ));

    let ledger = full_ledger(store, &a).await;
    let summary: Vec<(i64, i64, LedgerReason)> = ledger
        .iter()
        .map(|e| (e.delta, e.stock_after, e.reason))
        .collect();
    assert_eq!(
        summary,
        vec![(-3, 7, LedgerReason::Deduct), (-7, 0, LedgerReason::Deduct)]
    );
    assert_eq!(ledger[0].id, first.ledger_id);
    assert_eq!(
        ledger[0].idempotency_key.as_deref(),
        Some(first.idempotency_key.as_str()),
        "the ledger row carries the receipt's key"
    );

    let missing = store
        .deduct(DeductRequest::new(
            sku(&format!("{prefix}-missing")),
            qty(1),
            strategy,
        ))
        .await;
    assert!(matches!(missing, Err(DeductError::NotFound)), "{missing:?}");
    assert!(matches!(
        store
            .ledger(&sku(&format!("{prefix}-missing")), LedgerPage::first(10).unwrap())
            .await,
        Err(DeductError::NotFound)
    ));

    // Idempotent replay: same key, same request → the first receipt, nothing changed.
    let b = sku(&format!("{prefix}-b"));
    store.create_sku(&b, 5).await.expect("create b");
    let k = key(&format!("{prefix}-key-1"));
    let original = store
        .deduct(DeductRequest::new(b.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
        .await
        .expect("keyed deduct");
    assert!(!original.replayed);
    let again = store
        .deduct(DeductRequest::new(b.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!((again.ledger_id, again.remaining), (original.ledger_id, 3));
    assert_eq!((&original.idempotency_key, &again.idempotency_key), (&k, &k));
    assert_eq!(
        store.stock(&b).await.unwrap().stock,
        3,
        "a replay changes nothing"
    );
    let reused = store
        .deduct(DeductRequest::new(b.clone(), qty(1), strategy).with_idempotency_key(k.clone()))
        .await;
    assert!(
        matches!(reused, Err(DeductError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    let reused_elsewhere = store
        .deduct(DeductRequest::new(a.clone(), qty(2), strategy).with_idempotency_key(k))
        .await;
    assert!(
        matches!(reused_elsewhere, Err(DeductError::IdempotencyKeyReused)),
        "{reused_elsewhere:?}"
    );
    // A refused keyed request records nothing, so the same key may succeed later.
    let k2 = key(&format!("{prefix}-key-2"));
    let too_much = store
        .deduct(DeductRequest::new(b.clone(), qty(4), strategy).with_idempotency_key(k2.clone()))
        .await;
    assert!(matches!(
        too_much,
        Err(DeductError::InsufficientStock {
            requested: 4,
            available: 3
        })
    ));
    store
        .restock(RestockRequest::new(b.clone(), qty(10)))
        .await
        .expect("restock");
    let later = store
        .deduct(DeductRequest::new(b.clone(), qty(4), strategy).with_idempotency_key(k2))
        .await
        .expect("keyed deduct after restock");
    assert_eq!((later.remaining, later.replayed), (9, false));
    assert_eq!(full_ledger(store, &b).await.len(), 3);

    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// Restock limits and ledger paging (strategy-independent).
pub async fn restock_and_paging<S: InventoryStore>(store: &S) {
    let s = sku("page-sku");
    store.create_sku(&s, 0).await.expect("create");
    for i in 1..=7 {
        let receipt = store
            .restock(RestockRequest::new(s.clone(), qty(i)))
            .await
            .expect("restock");
        assert_eq!(receipt.stock_after, (1..=i).sum::<i64>());
    }
    assert!(matches!(
        store
            .restock(RestockRequest::new(sku("page-missing"), qty(1)))
            .await,
        Err(DeductError::NotFound)
    ));
    let big = sku("page-big");
    store.create_sku(&big, STOCK_MAX).await.expect("create at max");
    assert!(matches!(
        store.restock(RestockRequest::new(big.clone(), qty(1))).await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert_eq!(
        store.stock(&big).await.unwrap().stock,
        STOCK_MAX,
        "refused restock changes nothing"
    );

    let page1 = store.ledger(&s, LedgerPage::first(3).unwrap()).await.unwrap();
    let page2 = store
        .ledger(&s, LedgerPage::after(page1.last().map(|e| e.id), 3).unwrap())
        .await
        .unwrap();
    let page3 = store
        .ledger(&s, LedgerPage::after(page2.last().map(|e| e.id), 3).unwrap())
        .await
        .unwrap();
    let deltas: Vec<i64> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|e| e.delta)
        .collect();
    assert_eq!(deltas, vec![1, 2, 3, 4, 5, 6, 7]);
    assert!(
        page1
            .iter()
            .all(|e| e.reason == LedgerReason::Restock && e.sku == s)
    );
    // A keyed restock replays like a keyed deduction, and its key cannot be reused.
    let k = key("page-restock-key");
    let restocked = store
        .restock(RestockRequest::new(s.clone(), qty(5)).with_idempotency_key(k.clone()))
        .await
        .expect("keyed restock");
    let again = store
        .restock(RestockRequest::new(s.clone(), qty(5)).with_idempotency_key(k.clone()))
        .await
        .expect("replayed restock");
    assert!(!restocked.replayed && again.replayed);
    assert_eq!(
        (again.ledger_id, again.stock_after),
        (restocked.ledger_id, 28 + 5)
    );
    assert!(matches!(
        store
            .restock(RestockRequest::new(s.clone(), qty(6)).with_idempotency_key(k.clone()))
            .await,
        Err(DeductError::IdempotencyKeyReused)
    ));
    assert!(matches!(
        store
            .deduct(DeductRequest::new(s.clone(), qty(5), Strategy::Guarded).with_idempotency_key(k))
            .await,
        Err(DeductError::IdempotencyKeyReused)
    ));
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.ledger_rows, 8);
}

/// The `STOCK_MAX` guard on restock counts a SKU's `Sharded` bucket stock, not just its row.
/// `store` must spread eagerly (`spread_eagerly`), so the first `Sharded` deduction moves the
/// row's stock into buckets.
pub async fn restock_limit_counts_buckets<S: InventoryStore>(store: &S) {
    let s = sku("near-max");
    store.create_sku(&s, STOCK_MAX - 10).await.expect("create");
    store
        .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Sharded))
        .await
        .expect("a sharded deduction spreads the sku");
    let over = store.restock(RestockRequest::new(s.clone(), qty(20))).await;
    assert!(
        matches!(
            over,
            Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { given, .. })) if given == STOCK_MAX + 9
        ),
        "a restock past STOCK_MAX must be refused even when the row itself is empty: {over:?}"
    );
    let exact = store
        .restock(RestockRequest::new(s.clone(), qty(11)))
        .await
        .expect("a restock up to STOCK_MAX");
    assert_eq!(store.stock(&s).await.expect("stock").stock, STOCK_MAX);
    assert_eq!(exact.quantity, qty(11));
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// A conditional deduction (the client holds the version it read): applies at that version,
/// is refused with `VersionMismatch` (changing nothing) once the row moved, replays by its key
/// even after the row moved, and still refuses a shortfall at the right version.
pub async fn conditional_deduction<S: InventoryStore>(store: &S) {
    let s = sku("conditional");
    store.create_sku(&s, 10).await.expect("create");
    let read = store.stock(&s).await.expect("stock");
    let k = key("conditional-1");
    let first = store
        .deduct(
            DeductRequest::new(s.clone(), qty(3), Strategy::Guarded)
                .with_expected_version(read.version)
                .with_idempotency_key(k.clone()),
        )
        .await
        .expect("applies at the version read");
    assert_eq!(first.remaining, 7);
    let moved = store.stock(&s).await.expect("stock");
    assert_ne!(moved.version, read.version, "a write moves the version");
    let stale = store
        .deduct(
            DeductRequest::new(s.clone(), qty(1), Strategy::Pessimistic).with_expected_version(read.version),
        )
        .await;
    assert!(
        matches!(stale, Err(DeductError::VersionMismatch { expected, current }) if expected == read.version && current == moved.version),
        "{stale:?}"
    );
    let replay = store
        .deduct(
            DeductRequest::new(s.clone(), qty(3), Strategy::Guarded)
                .with_expected_version(read.version)
                .with_idempotency_key(k),
        )
        .await
        .expect("a repeated key replays, whatever the version now");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, first.ledger_id);
    let short = store
        .deduct(
            DeductRequest::new(s.clone(), qty(8), Strategy::Coalesced).with_expected_version(moved.version),
        )
        .await;
    assert!(
        matches!(
            short,
            Err(DeductError::InsufficientStock {
                requested: 8,
                available: 7
            })
        ),
        "{short:?}"
    );
    let missing = store
        .deduct(
            DeductRequest::new(sku("conditional-missing"), qty(1), Strategy::Guarded)
                .with_expected_version(0),
        )
        .await;
    assert!(matches!(missing, Err(DeductError::NotFound)), "{missing:?}");
    assert_eq!(
        store.stock(&s).await.expect("stock").stock,
        7,
        "refusals changed nothing"
    );
    assert_eq!(full_ledger(store, &s).await.len(), 1);
}
