//! Adjustments by hand on a real database: each kind with its sign, never below zero,
//! keyed replay and reuse, and the ledger row's kind and reference.

use super::{full_ledger, sku};
use crate::{DeductError, InventoryStore, LedgerReason};

/// Adjustments: each kind with its sign, never below zero, keyed replay and reuse, a ledger
/// row with its kind and reference, and a clean audit.
pub async fn adjustment_semantics<S: InventoryStore>(store: &S) {
    use crate::{AdjustRequest, AdjustmentKind};
    let s = sku("adj");
    store.create_sku(&s, 5).await.expect("create");
    let adjust = |delta, kind, reference: Option<&str>| {
        AdjustRequest::new(s.clone(), delta, kind, reference.map(str::to_owned)).expect("valid adjustment")
    };
    let returned = store
        .adjust(adjust(3, AdjustmentKind::Return, Some("RMA-1")).with_idempotency_key(super::key("adj-1")))
        .await
        .expect("a return adds");
    assert_eq!((returned.stock_after, returned.replayed), (8, false));
    let again = store
        .adjust(adjust(3, AdjustmentKind::Return, Some("RMA-1")).with_idempotency_key(super::key("adj-1")))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(again.ledger_id, returned.ledger_id);
    assert!(matches!(
        store
            .adjust(adjust(-3, AdjustmentKind::Damage, None).with_idempotency_key(super::key("adj-1")))
            .await,
        Err(DeductError::IdempotencyKeyReused)
    ));
    match store.adjust(adjust(-9, AdjustmentKind::Damage, None)).await {
        Err(DeductError::InsufficientStock { requested, available }) => {
            assert_eq!((requested, available), (9, 8))
        }
        other => panic!("a damage past zero must be refused: {other:?}"),
    }
    let counted = store
        .adjust(adjust(-8, AdjustmentKind::Recount, Some("count-2026-12")))
        .await
        .expect("a recount to zero");
    assert_eq!(counted.stock_after, 0);
    assert!(matches!(
        store
            .adjust(AdjustRequest::new(sku("adj-missing"), 1, AdjustmentKind::Restock, None).expect("valid"))
            .await,
        Err(DeductError::NotFound)
    ));
    let rows = full_ledger(store, &s).await;
    let shape: Vec<_> = rows
        .iter()
        .map(|r| (r.delta, r.reason, r.adjustment, r.reference.as_deref()))
        .collect();
    assert_eq!(
        shape,
        vec![
            (
                3,
                LedgerReason::Adjust,
                Some(AdjustmentKind::Return),
                Some("RMA-1")
            ),
            (
                -8,
                LedgerReason::Adjust,
                Some(AdjustmentKind::Recount),
                Some("count-2026-12")
            ),
        ]
    );
    assert!(store.audit().await.expect("audit").is_clean());
}
