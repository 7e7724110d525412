//! The local sold-out hint: once Redis refuses a SKU whose counter is 0 with nothing in
//! flight, the gate refuses its next requests without a Redis call, until the hint expires or
//! the gate reconciles the SKU. A client's key that committed (a deduction or an order) is
//! never refused by it: it goes to Redis and on to the database as a replay.
//!
//! Shown to catch a hint that ignores the done keys (the replay is refused as short), and
//! one that survives a restock through the gate (the sale after it is refused).

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::{
    DeductError, DeductRequest, IdempotencyKey, InventoryStore, RestockRequest, SkuId, Strategy,
};
use stockguard_redis_gate::{Admission, Gate, GateStats, GatedStore, Outcome};
use support::{gate, is_short, order, qty, sku, stock};

const HINT: Duration = Duration::from_secs(2);
/// Past the hint's life, the hold's 20 ms and a scheduling margin.
const HOLD_MARGIN: Duration = Duration::from_millis(150);

fn keyed(s: &SkuId, key: &str) -> DeductRequest {
    DeductRequest::new(s.clone(), qty(1), Strategy::Guarded)
        .with_idempotency_key(IdempotencyKey::parse(key).unwrap())
}

fn unkeyed(s: &SkuId) -> DeductRequest {
    DeductRequest::new(s.clone(), qty(1), Strategy::Guarded)
}

/// A gate whose hint lasts [`HINT`], in a fresh namespace.
async fn hinted_gate() -> Option<Arc<Gate>> {
    gate(|config| {
        config.reconcile_interval = Duration::from_secs(10);
        config.sold_out_hint = HINT;
    })
    .await
}

async fn the_sold_out_hint_refuses_locally_and_keeps_replays<S: InventoryStore>(store: S) {
    let Some(gate) = hinted_gate().await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("hinted");
    store.create_sku(&s, 2).await.expect("create");
    let sold = store.deduct(keyed(&s, "hint-1")).await.expect("sale");
    let ordered = store
        .place_order(order("hint-order", &[(&s, 1)]))
        .await
        .expect("an order takes the last unit");
    let stats = gate.stats();

    // Redis refuses the first; it leaves a hint, which refuses the next ones.
    assert!(is_short(&store.deduct(unkeyed(&s)).await));
    assert_eq!(GateStats::get(&stats.hints_taken), 1);
    for _ in 0..5 {
        assert!(is_short(&store.deduct(unkeyed(&s)).await));
    }
    assert!(is_short(&store.deduct(keyed(&s, "hint-new")).await));
    let short_order = store.place_order(order("hint-order-2", &[(&s, 1)])).await;
    assert!(
        matches!(short_order, Err(DeductError::OrderShort { .. })),
        "{short_order:?}"
    );
    assert_eq!(
        GateStats::get(&stats.refused_by_hint),
        7,
        "none of them reached Redis"
    );

    // Committed keys are replayed, not refused.
    let replay = store
        .deduct(keyed(&s, "hint-1"))
        .await
        .expect("a replay is answered");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, sold.ledger_id);
    let order_replay = store
        .place_order(order("hint-order", &[(&s, 1)]))
        .await
        .expect("an order's replay is answered");
    assert!(order_replay.replayed);
    assert_eq!(order_replay.order_id, ordered.order_id);
    assert_eq!(GateStats::get(&stats.refused_by_hint), 7);

    // A restock through the gate drops this instance's hint at once, and holds the units
    // until a hint taken anywhere would have expired; then they sell.
    store
        .restock(RestockRequest::new(s.clone(), qty(1)))
        .await
        .expect("restock");
    assert!(is_short(&store.deduct(unkeyed(&s)).await), "held");
    assert_eq!(GateStats::get(&stats.refused_held), 1);
    assert_eq!(
        GateStats::get(&stats.refused_by_hint),
        7,
        "refused by the hold in Redis, not by the dropped hint"
    );
    tokio::time::sleep(HINT + HOLD_MARGIN).await;
    store
        .deduct(unkeyed(&s))
        .await
        .expect("the restocked unit sells once the hold ends");
    assert_eq!(stock(&store, &s).await, 0);
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    gate.forget(&s).await.expect("forget");
}

/// Another instance raises the counter from 0: this one refuses from its hint until it
/// expires, and the other may not admit anything meanwhile (the hold), so no key can commit
/// there that this hint would refuse to replay. Past the hold, the other instance sells, and
/// a retry of that key here is a replay. A SKU whose done hash is partial keeps the hint for
/// requests without a client key only.
///
/// Shown to catch a reconcile that raises the counter without the hold: the other instance's
/// admission inside the hint succeeds.
async fn the_hint_expires_and_respects_a_partial_done_hash<S: InventoryStore>(store: S) {
    let Some(gate) = hinted_gate().await else { return };
    let namespace = gate.config().namespace.clone();
    let Some(other_gate) = support::gate(|config| config.namespace = namespace).await else {
        return;
    };
    let here = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("expiring");
    here.create_sku(&s, 1).await.expect("create");
    here.deduct(keyed(&s, "exp-1")).await.expect("sale");
    assert!(is_short(&here.deduct(unkeyed(&s)).await));
    assert_eq!(GateStats::get(&gate.stats().hints_taken), 1);

    // The other instance restocks, and its gate recomputes the counter in Redis.
    here.inner()
        .restock(RestockRequest::new(s.clone(), qty(1)))
        .await
        .expect("restock");
    assert_eq!(
        other_gate
            .reconcile(here.inner(), &s)
            .await
            .expect("reconcile")
            .after,
        1
    );
    let refused = here.deduct(unkeyed(&s)).await;
    assert!(
        matches!(refused, Err(DeductError::InsufficientStock { .. })),
        "within the hint: {refused:?}"
    );
    assert_eq!(GateStats::get(&gate.stats().refused_by_hint), 1);
    let key = IdempotencyKey::parse("exp-2").unwrap();
    assert_eq!(
        other_gate.admit(here.inner(), &s, &key, 1).await.unwrap(),
        Admission::Refused { available: 0 },
        "held while a hint may live"
    );
    tokio::time::sleep(HINT + HOLD_MARGIN).await;
    // Past the hold, the other instance sells under a client key whose answer is lost...
    assert_eq!(
        other_gate.admit(here.inner(), &s, &key, 1).await.unwrap(),
        Admission::Admitted
    );
    let sold = here.inner().deduct(keyed(&s, "exp-2")).await.expect("sale");
    other_gate.finish(&s, &key, Outcome::Committed).await;
    // ... and its retry here is a replay.
    let replay = here
        .deduct(keyed(&s, "exp-2"))
        .await
        .expect("the retry is replayed");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, sold.ledger_id);

    // Redis loses the SKU: the warm-up marks its done hash partial.
    gate.forget(&s).await.expect("forget");
    assert!(is_short(&here.deduct(unkeyed(&s)).await));
    let hinted = GateStats::get(&gate.stats().refused_by_hint);
    let lookups = GateStats::get(&gate.stats().replay_lookups);
    let replay = here
        .deduct(keyed(&s, "exp-1"))
        .await
        .expect("a replay is answered");
    assert!(replay.replayed);
    assert!(is_short(&here.deduct(keyed(&s, "exp-new")).await));
    assert_eq!(
        GateStats::get(&gate.stats().replay_lookups),
        lookups + 2,
        "client keys went to Redis and the database"
    );
    assert!(is_short(&here.deduct(unkeyed(&s)).await));
    assert_eq!(GateStats::get(&gate.stats().refused_by_hint), hinted + 1);
    let audit = here.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    gate.forget(&s).await.expect("forget");
}

/// A restock from zero is held, but a key that committed outside the done hash (here before
/// Redis lost the SKU, so its done hash is partial) is still replayed during the hold, after a
/// lookup in the database; a new key is refused. Found by the chaos suite's `+gate` cell: with
/// the hold checked before the partial mark, such a replay was answered 409.
async fn a_hold_still_answers_replays_the_done_hash_lacks<S: InventoryStore>(store: S) {
    let Some(gate) = hinted_gate().await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("held");
    store.create_sku(&s, 1).await.expect("create");
    let sold = store.deduct(keyed(&s, "held-1")).await.expect("sale");
    gate.forget(&s).await.expect("Redis loses the SKU's keys");
    // The warm-up marks the done hash partial; the refusal marks the SKU hinted.
    assert!(is_short(&store.deduct(unkeyed(&s)).await));
    store
        .inner()
        .restock(RestockRequest::new(s.clone(), qty(1)))
        .await
        .expect("restock");
    assert_eq!(
        gate.reconcile(store.inner(), &s).await.expect("reconcile").after,
        1
    );

    let replay = store
        .deduct(keyed(&s, "held-1"))
        .await
        .expect("a replay during the hold is answered");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, sold.ledger_id);
    assert!(is_short(&store.deduct(keyed(&s, "held-2")).await), "held");
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    gate.forget(&s).await.expect("forget");
}

on_every_database!(
    a_hold_still_answers_replays_the_done_hash_lacks,
    the_sold_out_hint_refuses_locally_and_keeps_replays,
    the_hint_expires_and_respects_a_partial_done_hash,
);
