//! Holds on a real database: units leave available stock at once and count against every
//! other change; each hold resolves at most once (confirm in full or in part, release, or
//! expire); expiry takes effect at read time on the database's clock; the sweeper expires in
//! batches; lost answers are resolved by the hold id; and the races that decide a hold's end
//! (confirm against expiry, a partial confirm against a release) resolve it exactly once.

use std::sync::Arc;
use std::time::Duration;

use super::{full_ledger, qty, sku};
use crate::engine::{Backend, Engine};
use crate::{
    AdjustRequest, AdjustmentKind, ConfirmLines, DeductError, DeductRequest, HoldId, HoldReceipt,
    HoldRequest, HoldState, InvalidInput, InventoryStore, LedgerReason, OrderLine, OrderStrategy, ShortLine,
    SkuId, Strategy,
};

fn hold_id(raw: &str) -> HoldId {
    HoldId::parse(raw).expect("test hold id")
}

fn lines(lines: &[(&SkuId, i64)]) -> Vec<OrderLine> {
    lines
        .iter()
        .map(|(sku, units)| OrderLine {
            sku: (*sku).clone(),
            quantity: qty(*units),
        })
        .collect()
}

fn hold(id: &str, held: &[(&SkuId, i64)], ttl_s: u32, strategy: OrderStrategy) -> HoldRequest {
    HoldRequest::new(hold_id(id), lines(held), ttl_s, strategy).expect("valid test hold")
}

fn partial(confirmed: &[(&SkuId, i64)]) -> ConfirmLines {
    ConfirmLines::partial(lines(confirmed)).expect("valid partial confirm")
}

/// `(available, reserved)`.
async fn levels<S: InventoryStore>(store: &S, sku: &SkuId) -> (i64, i64) {
    let level = store.stock(sku).await.expect("stock");
    (level.stock, level.reserved)
}

/// `(sku, quantity, confirmed, returned)` of each line.
fn shape(receipt: &HoldReceipt) -> Vec<(SkuId, i64, i64, i64)> {
    receipt
        .lines
        .iter()
        .map(|l| (l.sku.clone(), l.quantity, l.confirmed, l.returned))
        .collect()
}

async fn assert_audit_clean<S: InventoryStore>(store: &S) -> u64 {
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "audit: {audit:?}");
    audit.holds_checked
}

/// Sequential semantics of holds placed with one strategy.
pub async fn hold_semantics<S: InventoryStore>(store: &S, strategy: OrderStrategy) {
    let tag = strategy.as_str();
    let (a, b) = (sku(&format!("ha-{tag}")), sku(&format!("hb-{tag}")));
    store.create_sku(&a, 10).await.expect("create");
    store.create_sku(&b, 5).await.expect("create");

    // Duplicate lines are summed; the units leave available stock for reserved at once.
    let h1 = format!("h1-{tag}");
    let placed = store
        .reserve(hold(&h1, &[(&a, 3), (&b, 2), (&a, 1)], 600, strategy))
        .await
        .expect("hold fits");
    assert_eq!((placed.state, placed.replayed), (HoldState::Active, false));
    assert_eq!(shape(&placed), vec![(a.clone(), 4, 0, 0), (b.clone(), 2, 0, 0)]);
    assert_eq!(placed.lines[0].available, 6);
    assert_eq!(levels(store, &a).await, (6, 4));
    assert_eq!(levels(store, &b).await, (3, 2));

    // The hold id is the idempotency key.
    let again = store
        .reserve(hold(&h1, &[(&b, 2), (&a, 4)], 600, strategy))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!(
        (shape(&again), again.expires_at),
        (shape(&placed), placed.expires_at)
    );
    let mismatch = store.reserve(hold(&h1, &[(&a, 5)], 600, strategy)).await;
    assert!(
        matches!(mismatch, Err(DeductError::HoldMismatch { .. })),
        "{mismatch:?}"
    );

    // Held units count against every other change: holds, deductions, adjustments.
    let short = store
        .reserve(hold(&format!("h2-{tag}"), &[(&b, 4)], 600, strategy))
        .await;
    match short {
        Err(DeductError::OrderShort { lines }) => assert_eq!(
            lines,
            vec![ShortLine {
                sku: b.clone(),
                requested: 4,
                available: 3
            }]
        ),
        other => panic!("expected OrderShort, got {other:?}"),
    }
    let deduction = store
        .deduct(DeductRequest::new(b.clone(), qty(4), Strategy::Guarded))
        .await;
    assert!(
        matches!(deduction, Err(DeductError::InsufficientStock { .. })),
        "{deduction:?}"
    );
    let damage = AdjustRequest::new(b.clone(), -4, AdjustmentKind::Damage, None).expect("valid");
    let adjusted = store.adjust(damage).await;
    assert!(
        matches!(adjusted, Err(DeductError::InsufficientStock { .. })),
        "an adjustment took on hand below reserved: {adjusted:?}"
    );
    assert_eq!(levels(store, &b).await, (3, 2), "refusals changed nothing");

    // A partial confirm: 3 of a's 4 units sold, b (not named) released in full.
    let h1_id = hold_id(&h1);
    let confirmed = store
        .confirm_hold(&h1_id, partial(&[(&a, 3)]))
        .await
        .expect("confirm");
    assert_eq!(confirmed.state, HoldState::Confirmed);
    assert_eq!(
        shape(&confirmed),
        vec![(a.clone(), 4, 3, 1), (b.clone(), 2, 0, 2)]
    );
    assert_eq!(levels(store, &a).await, (7, 0));
    assert_eq!(levels(store, &b).await, (5, 0));
    // Again with the same units replays; anything else is refused, and changes nothing.
    let replay = store
        .confirm_hold(&h1_id, partial(&[(&a, 3)]))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(shape(&replay), shape(&confirmed));
    for refused in [
        store.confirm_hold(&h1_id, ConfirmLines::All).await,
        store.release_hold(&h1_id).await,
    ] {
        assert!(
            matches!(
                refused,
                Err(DeductError::HoldResolved {
                    state: HoldState::Confirmed
                })
            ),
            "{refused:?}"
        );
    }
    assert_eq!(
        store.hold(&h1_id).await.expect("read"),
        HoldReceipt {
            replayed: false,
            attempts: 1,
            ..confirmed.clone()
        }
    );

    // A partial confirm must fit the hold.
    let h3 = hold_id(&format!("h3-{tag}"));
    store
        .reserve(hold(h3.as_str(), &[(&a, 2)], 600, strategy))
        .await
        .expect("hold");
    for (bad, held) in [(partial(&[(&b, 1)]), 0), (partial(&[(&a, 3)]), 2)] {
        match store.confirm_hold(&h3, bad).await {
            Err(DeductError::InvalidInput(InvalidInput::ConfirmLine { held: h, .. })) => assert_eq!(h, held),
            other => panic!("expected ConfirmLine, got {other:?}"),
        }
    }
    // Release: every unit back; again replays; a confirm after it is refused.
    let released = store.release_hold(&h3).await.expect("release");
    assert_eq!(
        (released.state, shape(&released)),
        (HoldState::Released, vec![(a.clone(), 2, 0, 2)])
    );
    assert!(store.release_hold(&h3).await.expect("replay").replayed);
    assert!(matches!(
        store.confirm_hold(&h3, ConfirmLines::All).await,
        Err(DeductError::HoldResolved {
            state: HoldState::Released
        })
    ));
    assert_eq!(levels(store, &a).await, (7, 0));
    assert!(matches!(
        store.hold(&hold_id("no-such-hold")).await,
        Err(DeductError::HoldNotFound)
    ));
    assert!(matches!(
        store.release_hold(&hold_id("no-such-hold")).await,
        Err(DeductError::HoldNotFound)
    ));

    // The ledger: one row per line and step, the hold id as reference, confirm moving nothing.
    let reasons: Vec<(LedgerReason, i64)> = full_ledger(store, &a)
        .await
        .iter()
        .map(|row| {
            assert!(row.reference.is_some() && row.idempotency_key.is_none());
            (row.reason, row.delta)
        })
        .collect();
    assert_eq!(
        reasons,
        vec![
            (LedgerReason::Reserve, -4),
            (LedgerReason::Confirm, 0),
            (LedgerReason::Release, 1),
            (LedgerReason::Reserve, -2),
            (LedgerReason::Release, 2),
        ]
    );
    assert_eq!(assert_audit_clean(store).await, 2);
}

/// A hold past its expiry stops counting at once, before any sweeper: reads report its units
/// as available, confirm and release are refused, a change that needs its units expires it
/// first; the sweeper expires the rest in batches.
pub async fn holds_expire_at_read_time<S: InventoryStore>(store: &S) {
    let e = sku("hold-expiry");
    store.create_sku(&e, 5).await.expect("create");
    let h = hold_id("he-1");
    let placed = store
        .reserve(hold(h.as_str(), &[(&e, 5)], 1, OrderStrategy::Guarded))
        .await
        .expect("hold");
    assert_eq!(levels(store, &e).await, (0, 5));
    let early = store
        .deduct(DeductRequest::new(e.clone(), qty(1), Strategy::Guarded))
        .await;
    assert!(matches!(early, Err(DeductError::InsufficientStock { .. })));
    wait_past(placed.expires_at).await;

    assert_eq!(levels(store, &e).await, (5, 0), "a due hold reads as available");
    assert_eq!(store.hold(&h).await.expect("read").state, HoldState::Expired);
    for refused in [
        store.confirm_hold(&h, ConfirmLines::All).await,
        store.release_hold(&h).await,
    ] {
        assert!(
            matches!(refused, Err(DeductError::HoldExpired { .. })),
            "{refused:?}"
        );
    }
    // The deduction needs the hold's units: it expires the hold and goes through.
    let receipt = store
        .deduct(DeductRequest::new(e.clone(), qty(2), Strategy::Guarded))
        .await
        .expect("the due hold's units are available");
    assert_eq!(receipt.remaining, 3);
    let rows: Vec<LedgerReason> = full_ledger(store, &e)
        .await
        .iter()
        .map(|row| row.reason)
        .collect();
    assert_eq!(
        rows,
        vec![LedgerReason::Reserve, LedgerReason::Expire, LedgerReason::Deduct]
    );
    assert_eq!(
        store.sweep_holds(100).await.expect("sweep"),
        0,
        "nothing left to sweep"
    );

    // The sweeper: three due holds, two per batch.
    let mut last = None;
    for n in 0..3 {
        let placed = store
            .reserve(hold(&format!("hs-{n}"), &[(&e, 1)], 1, OrderStrategy::Locked))
            .await
            .expect("hold");
        last = Some(placed.expires_at);
    }
    assert_eq!(levels(store, &e).await, (0, 3));
    wait_past(last.expect("placed")).await;
    assert_eq!(store.sweep_holds(2).await.expect("sweep"), 2);
    assert_eq!(store.sweep_holds(2).await.expect("sweep"), 1);
    assert_eq!(store.sweep_holds(2).await.expect("sweep"), 0);
    assert_eq!(levels(store, &e).await, (3, 0));
    assert!(matches!(
        store.sweep_holds(0).await,
        Err(DeductError::InvalidInput(InvalidInput::SweepBatch { .. }))
    ));
    assert_eq!(assert_audit_clean(store).await, 4);
}

/// Sleeps until the database's clock has passed `expires_at` (the local clock plus a margin:
/// all servers here run on this machine).
async fn wait_past(expires_at: chrono::DateTime<chrono::Utc>) {
    let left = (expires_at - chrono::Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(150)).await;
}

/// A lost answer to placing, confirming or releasing a hold is resolved by the hold id.
pub async fn lost_hold_answers_are_resolved<B: Backend>(store: Arc<Engine<B>>) {
    let s = sku("hold-lost");
    store.create_sku(&s, 10).await.expect("create");
    let (h1, h2) = (hold_id("hl-1"), hold_id("hl-2"));
    for h in [&h1, &h2] {
        store.lose_next_answer(&h.idempotency_key());
        let placed = store
            .reserve(hold(h.as_str(), &[(&s, 2)], 600, OrderStrategy::Guarded))
            .await
            .expect("resolved as committed");
        assert_eq!(placed.state, HoldState::Active);
        assert!(!placed.replayed, "this call's own commit is not a replay");
    }
    store.lose_next_answer(&h1.idempotency_key());
    let confirmed = store
        .confirm_hold(&h1, ConfirmLines::All)
        .await
        .expect("resolved");
    assert_eq!(shape(&confirmed), vec![(s.clone(), 2, 2, 0)]);
    store.lose_next_answer(&h2.idempotency_key());
    let released = store.release_hold(&h2).await.expect("resolved");
    assert_eq!(released.state, HoldState::Released);
    assert_eq!(levels(&*store, &s).await, (8, 0));
    assert_eq!(
        full_ledger(&*store, &s).await.len(),
        4,
        "each change committed once"
    );
    assert_eq!(assert_audit_clean(&*store).await, 2);
}

/// `holds` holds of one unit each, each confirmed while the sweeper runs: every hold resolves
/// exactly once, and the answer says which way. The first half expires half a second before
/// the race (their confirms must all be refused as expired, sweeper or not); the second half
/// expires as the race runs (either way, but once).
pub async fn confirm_races_expiry<S: InventoryStore>(store: Arc<S>, holds: usize) {
    let s = sku("hold-race-expiry");
    let initial = i64::try_from(holds).expect("small") * 2;
    store.create_sku(&s, initial).await.expect("create");
    let mut expiry = None;
    let early = holds / 2;
    for n in 0..holds {
        if n == early {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let placed = store
            .reserve(hold(&format!("hr-{n}"), &[(&s, 1)], 1, OrderStrategy::Guarded))
            .await
            .expect("hold");
        expiry = Some(placed.expires_at);
    }
    // Start the race just before the last hold expires: the early half is long due.
    let left = (expiry.expect("placed") - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(left.saturating_sub(Duration::from_millis(30))).await;
    let sweeper = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for _ in 0..50 {
                store.sweep_holds(3).await.expect("sweep");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let confirms: Vec<_> = (0..holds)
        .map(|n| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let id = hold_id(&format!("hr-{n}"));
                (id.clone(), store.confirm_hold(&id, ConfirmLines::All).await)
            })
        })
        .collect();
    let mut sold = 0;
    let mut answers = Vec::new();
    for confirm in confirms {
        answers.push(confirm.await.expect("confirm task"));
    }
    sweeper.await.expect("sweeper");
    for _ in 0..holds {
        if store.sweep_holds(100).await.expect("sweep") == 0 {
            break;
        }
    }
    for (n, (id, answer)) in answers.into_iter().enumerate() {
        let state = store.hold(&id).await.expect("read").state;
        if n < early {
            assert!(
                matches!(answer, Err(DeductError::HoldExpired { .. })),
                "{id} was past its expiry, yet: {answer:?}"
            );
        }
        match answer {
            Ok(receipt) => {
                assert_eq!(
                    (receipt.state, state),
                    (HoldState::Confirmed, HoldState::Confirmed)
                );
                sold += 1;
            }
            Err(DeductError::HoldExpired { .. }) => assert_eq!(state, HoldState::Expired, "{id}"),
            Err(other) => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(levels(&*store, &s).await, (initial - sold, 0));
    assert_audit_clean(&*store).await;
}

/// A partial confirm and a release of the same hold, `holds` times at once: exactly one wins
/// each time, the other is told how the hold ended, and stock shows only the winner.
pub async fn partial_confirm_races_release<S: InventoryStore>(store: Arc<S>, holds: usize) {
    let (x, y) = (sku("hold-race-x"), sku("hold-race-y"));
    let initial = i64::try_from(holds).expect("small") * 3;
    for s in [&x, &y] {
        store.create_sku(s, initial).await.expect("create");
    }
    for n in 0..holds {
        store
            .reserve(hold(
                &format!("hp-{n}"),
                &[(&x, 2), (&y, 1)],
                600,
                OrderStrategy::Guarded,
            ))
            .await
            .expect("hold");
    }
    let races: Vec<_> = (0..holds)
        .map(|n| {
            let id = hold_id(&format!("hp-{n}"));
            let confirm = {
                let (store, id, x) = (Arc::clone(&store), id.clone(), x.clone());
                tokio::spawn(async move { store.confirm_hold(&id, partial(&[(&x, 1)])).await })
            };
            let release = {
                let (store, id) = (Arc::clone(&store), id.clone());
                tokio::spawn(async move { store.release_hold(&id).await })
            };
            (id, confirm, release)
        })
        .collect();
    let mut sold = 0;
    for (id, confirm, release) in races {
        let (confirm, release) = (confirm.await.expect("task"), release.await.expect("task"));
        let state = store.hold(&id).await.expect("read").state;
        match (confirm, release) {
            (
                Ok(_),
                Err(DeductError::HoldResolved {
                    state: HoldState::Confirmed,
                }),
            ) => {
                assert_eq!(state, HoldState::Confirmed);
                sold += 1;
            }
            (
                Err(DeductError::HoldResolved {
                    state: HoldState::Released,
                }),
                Ok(_),
            ) => {
                assert_eq!(state, HoldState::Released);
            }
            other => panic!("{id}: both or neither won: {other:?}"),
        }
    }
    assert_eq!(levels(&*store, &x).await, (initial - sold, 0));
    assert_eq!(levels(&*store, &y).await, (initial, 0));
    assert_audit_clean(&*store).await;
}
