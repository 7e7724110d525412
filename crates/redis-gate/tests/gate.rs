//! The gate on the machine's Redis in front of real PostgreSQL, MariaDB and SQLite: a flash
//! sale sells exactly its supply with the surplus turned away at Redis; refusals and replays
//! give units back; orders are admitted line by line; unknown outcomes are resolved by key;
//! drift either way is reconciled to the database's truth.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use stockguard_core::{
    AdjustRequest, AdjustmentKind, DeductError, DeductRequest, IdempotencyKey, InventoryStore,
    RestockRequest, Strategy,
};
use stockguard_redis_gate::{Admission, Gate, GateScope, GateStats, GatedStore, Outcome};
use support::{gate, is_short, order, qty, raw_redis, sku, stock};

/// Drops the test's counters and records.
async fn forget(gate: &Gate, skus: &[&stockguard_core::SkuId]) {
    for sku in skus {
        gate.forget(sku).await.expect("forget");
    }
}

/// 400 buyers for 50 units: exactly 50 sold, and the other 350 refused by the gate without a
/// database call (the counter was warm, so nothing drifted).
async fn flash_sale_sells_exactly_the_supply<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = Arc::new(GatedStore::new(store, Arc::clone(&gate)));
    let hot = sku("flash");
    store.create_sku(&hot, 50).await.expect("create");
    assert_eq!(
        gate.counter(&hot).await.unwrap(),
        Some(50),
        "creation warms the counter"
    );

    let start = Arc::new(tokio::sync::Barrier::new(400));
    let buyers: Vec<_> = (0..400)
        .map(|_| {
            let (store, start, hot) = (Arc::clone(&store), Arc::clone(&start), hot.clone());
            tokio::spawn(async move {
                start.wait().await;
                store
                    .deduct(DeductRequest::new(hot, qty(1), Strategy::Guarded))
                    .await
            })
        })
        .collect();
    let (mut sold, mut refused) = (Vec::new(), 0);
    for buyer in buyers {
        match buyer.await.expect("buyer") {
            Ok(receipt) => sold.push(receipt),
            answer if is_short(&answer) => refused += 1,
            Err(error) => panic!("a buyer failed: {error:?}"),
        }
    }
    assert_eq!((sold.len(), refused), (50, 350));
    let stats = gate.stats();
    assert_eq!(
        GateStats::get(&stats.admitted),
        50,
        "only the supply reached the database"
    );
    assert_eq!(GateStats::get(&stats.refused), 350);
    assert_eq!(stock(&*store, &hot).await, 0);
    assert_eq!(gate.counter(&hot).await.unwrap(), Some(0));
    assert!(gate.in_flight(&hot).await.unwrap().is_empty());

    // After sell-out, a buyer retrying with its key gets its receipt back, never a refusal.
    let retry = DeductRequest::new(hot.clone(), qty(1), Strategy::Guarded)
        .with_idempotency_key(sold[7].idempotency_key.clone());
    let replay = store.deduct(retry).await.expect("a replay after sell-out");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, sold[7].ledger_id);
    assert_eq!(gate.counter(&hot).await.unwrap(), Some(0));
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    forget(&gate, &[&hot]).await;
}

/// A replay, a reused key and a stale version are answered by the database with nothing
/// changed: each gives its units back. A request larger than the counter never reaches it.
async fn refusals_and_replays_give_units_back<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("give-back");
    let created = store.create_sku(&s, 10).await.expect("create");
    let k1 = IdempotencyKey::parse("give-back-1").unwrap();
    let keyed =
        |units| DeductRequest::new(s.clone(), qty(units), Strategy::Guarded).with_idempotency_key(k1.clone());
    let first = store.deduct(keyed(1)).await.expect("first");
    assert!(!first.replayed);
    assert_eq!(gate.counter(&s).await.unwrap(), Some(9));
    let replay = store.deduct(keyed(1)).await.expect("replay");
    assert!(replay.replayed);
    assert_eq!(gate.counter(&s).await.unwrap(), Some(9), "a replay takes nothing");
    let reused = store.deduct(keyed(2)).await;
    assert!(
        matches!(reused, Err(DeductError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    assert_eq!(gate.counter(&s).await.unwrap(), Some(9));
    let stale = store
        .deduct(
            DeductRequest::new(s.clone(), qty(1), Strategy::Optimistic)
                .with_expected_version(created.version),
        )
        .await;
    assert!(
        matches!(stale, Err(DeductError::VersionMismatch { .. })),
        "{stale:?}"
    );
    assert_eq!(gate.counter(&s).await.unwrap(), Some(9));

    // A key committed without the gate (another service, or before the gate was there): its
    // replay through the gate is admitted, answered by the database as a replay, and gives
    // its units back.
    let k2 = IdempotencyKey::parse("give-back-2").unwrap();
    let other = DeductRequest::new(s.clone(), qty(1), Strategy::Guarded).with_idempotency_key(k2);
    store
        .inner()
        .deduct(other.clone())
        .await
        .expect("committed beside the gate");
    gate.reconcile(store.inner(), &s).await.expect("reconcile");
    assert_eq!(gate.counter(&s).await.unwrap(), Some(8));
    assert!(store.deduct(other).await.expect("replay").replayed);
    assert_eq!(gate.counter(&s).await.unwrap(), Some(8), "a replay takes nothing");

    let too_many = store
        .deduct(DeductRequest::new(s.clone(), qty(20), Strategy::Guarded))
        .await;
    assert!(
        matches!(
            too_many,
            Err(DeductError::InsufficientStock {
                requested: 20,
                available: 8
            })
        ),
        "{too_many:?}"
    );
    assert_eq!(GateStats::get(&gate.stats().refused), 1);
    assert_eq!(stock(&store, &s).await, 8);
    assert!(gate.in_flight(&s).await.unwrap().is_empty());
    forget(&gate, &[&s]).await;
}

/// Orders pass the gate line by line: a short line refuses the order at the gate, naming the
/// line, and gives back the lines admitted before it; a replay takes nothing; a restock
/// through the gated store shows in the counter at once.
async fn orders_are_admitted_line_by_line<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let (a, b) = (sku("order-a"), sku("order-b"));
    store.create_sku(&a, 5).await.expect("create");
    store.create_sku(&b, 1).await.expect("create");
    store
        .place_order(order("gate-o1", &[(&a, 1), (&b, 1)]))
        .await
        .expect("o1");
    assert_eq!(gate.counter(&a).await.unwrap(), Some(4));
    assert_eq!(gate.counter(&b).await.unwrap(), Some(0));

    let short = store.place_order(order("gate-o2", &[(&a, 2), (&b, 1)])).await;
    match short {
        Err(DeductError::OrderShort { lines }) => {
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert_eq!(
                (&lines[0].sku, lines[0].requested, lines[0].available),
                (&b, 1, 0)
            );
        }
        other => panic!("expected a short order: {other:?}"),
    }
    assert_eq!(
        gate.counter(&a).await.unwrap(),
        Some(4),
        "the admitted line went back"
    );
    assert_eq!(stock(&store, &a).await, 4, "the database was not touched");

    let replay = store
        .place_order(order("gate-o1", &[(&a, 1), (&b, 1)]))
        .await
        .expect("replay");
    assert!(replay.replayed);
    assert_eq!(gate.counter(&a).await.unwrap(), Some(4));
    assert_eq!(gate.counter(&b).await.unwrap(), Some(0));

    store
        .restock(RestockRequest::new(b.clone(), qty(2)))
        .await
        .expect("restock");
    assert_eq!(
        gate.counter(&b).await.unwrap(),
        Some(2),
        "a restock warms the counter"
    );
    store
        .place_order(order("gate-o3", &[(&a, 1), (&b, 2)]))
        .await
        .expect("o3");
    assert_eq!((stock(&store, &a).await, stock(&store, &b).await), (3, 0));
    assert_eq!(gate.counter(&a).await.unwrap(), Some(3));
    assert_eq!(gate.counter(&b).await.unwrap(), Some(0));
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    forget(&gate, &[&a, &b]).await;
}

/// Records whose outcome is unknown stay until their key resolves them: a committed one is
/// found by the reconciler's lookup; a client's retry with the key applies once without a
/// second decrement; one that never reached the database is dropped after the grace. After
/// that reconcile the counter equals the database: no undersell remains.
async fn unknown_outcomes_are_resolved_by_key<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("unknown");
    store.create_sku(&s, 10).await.expect("create");
    let key = |raw: &str| IdempotencyKey::parse(raw).unwrap();
    let request = |units, k: &IdempotencyKey| {
        DeductRequest::new(s.clone(), qty(units), Strategy::Guarded).with_idempotency_key(k.clone())
    };

    // A committed, but its answer was lost.
    let (ka, kb, kc) = (key("unknown-a"), key("unknown-b"), key("unknown-c"));
    assert_eq!(
        gate.admit(store.inner(), &s, &ka, 1).await.unwrap(),
        Admission::Admitted
    );
    store.inner().deduct(request(1, &ka)).await.expect("a commits");
    gate.finish(&s, &ka, Outcome::Unknown).await;
    // B was admitted, then the service died before the database saw it.
    assert_eq!(
        gate.admit(store.inner(), &s, &kb, 2).await.unwrap(),
        Admission::Admitted
    );
    gate.finish(&s, &kb, Outcome::Unknown).await;
    assert_eq!(gate.counter(&s).await.unwrap(), Some(7));

    let reconciled = gate.reconcile(store.inner(), &s).await.expect("reconcile");
    assert_eq!(
        (reconciled.committed, reconciled.stale, reconciled.in_flight),
        (1, 0, 2)
    );
    assert_eq!(reconciled.after, 7, "B may still commit: its units stay out");

    // The client retries B with its key: admitted again without a second decrement.
    let retried = store.deduct(request(2, &kb)).await.expect("b applies once");
    assert!(!retried.replayed);
    assert_eq!(
        (gate.counter(&s).await.unwrap(), stock(&store, &s).await),
        (Some(7), 7)
    );
    assert!(gate.in_flight(&s).await.unwrap().is_empty());

    // C: admitted, lost, never retried. Within the grace it is kept (undersell of 3); past
    // it, a reconcile drops it and the counter equals the database again.
    assert_eq!(
        gate.admit(store.inner(), &s, &kc, 3).await.unwrap(),
        Admission::Admitted
    );
    gate.finish(&s, &kc, Outcome::Unknown).await;
    assert_eq!(gate.reconcile(store.inner(), &s).await.unwrap().after, 4);
    let namespace = gate.config().namespace.clone();
    let Some(impatient) = support::gate(|config| {
        config.namespace = namespace;
        config.unknown_grace = Duration::from_millis(1);
    })
    .await
    else {
        return;
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let reconciled = impatient.reconcile(store.inner(), &s).await.expect("reconcile");
    assert_eq!((reconciled.stale, reconciled.after), (1, 7));
    assert_eq!(stock(&store, &s).await, 7, "undersell is 0 after the reconcile");
    forget(&gate, &[&s]).await;
}

/// Drift both ways: a counter too low (a give-back lost in a failover) refuses while the
/// database has stock until a reconcile pass; a counter too high (a decrement lost) only lets
/// the database refuse, never oversell; an adjustment through the gate refreshes at once.
/// The sold-out hint is off here: with it, the refusal at 0 marks the SKU hinted, and the
/// reconcile that raises it from 0 is held for the hint's life (tests/sold_out.rs).
async fn drift_is_reconciled_both_ways<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|config| config.sold_out_hint = Duration::ZERO).await else {
        return;
    };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("drift");
    store.create_sku(&s, 3).await.expect("create");
    let mut redis = raw_redis().await;
    let deduct = |units| DeductRequest::new(s.clone(), qty(units), Strategy::Guarded);

    let _: () = redis.set(gate.units_key(&s), 0).await.unwrap();
    assert!(
        is_short(&store.deduct(deduct(1)).await),
        "undersell while drifted low"
    );
    let (reconciled, error) = gate.reconcile_all(store.inner()).await;
    assert!(error.is_none(), "{error:?}");
    assert!(reconciled >= 1);
    assert_eq!(gate.counter(&s).await.unwrap(), Some(3));
    store.deduct(deduct(1)).await.expect("sold after the reconcile");

    let _: () = redis.set(gate.units_key(&s), 1_000).await.unwrap();
    let over = store.deduct(deduct(5)).await;
    assert!(
        is_short(&over),
        "the database refuses what the counter admitted: {over:?}"
    );
    assert_eq!(stock(&store, &s).await, 2, "no oversell");
    gate.reconcile(store.inner(), &s).await.expect("reconcile");
    assert_eq!(gate.counter(&s).await.unwrap(), Some(2));

    let back = AdjustRequest::new(s.clone(), 4, AdjustmentKind::Return, Some("rma-1".into())).unwrap();
    store.adjust(back).await.expect("return");
    assert_eq!(gate.counter(&s).await.unwrap(), Some(6));
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    forget(&gate, &[&s]).await;
}

/// Priming sets cold counters without a database read and never overwrites one in use;
/// `forget_all` leaves nothing of the namespace behind.
async fn priming_never_overwrites_a_counter<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let (a, b) = (sku("prime-a"), sku("prime-b"));
    store.create_sku(&a, 5).await.expect("create");
    store
        .inner()
        .create_sku(&b, 7)
        .await
        .expect("create beside the gate");
    store
        .deduct(DeductRequest::new(a.clone(), qty(1), Strategy::Guarded))
        .await
        .expect("sale");
    assert_eq!(gate.counter(&b).await.unwrap(), None);
    gate.prime(&[(a.clone(), 5), (b.clone(), 7)])
        .await
        .expect("prime");
    assert_eq!(
        gate.counter(&a).await.unwrap(),
        Some(4),
        "a counter in use is kept"
    );
    assert_eq!(gate.counter(&b).await.unwrap(), Some(7));
    let warmups = GateStats::get(&gate.stats().reconciled);
    store
        .deduct(DeductRequest::new(b.clone(), qty(2), Strategy::Guarded))
        .await
        .expect("sale");
    assert_eq!(
        GateStats::get(&gate.stats().reconciled),
        warmups,
        "no warm-up after priming"
    );
    assert_eq!(gate.counter(&b).await.unwrap(), Some(5));
    let (reconciled, error) = gate.reconcile_all(store.inner()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(reconciled, 2, "primed SKUs are on the reconciler's list");
    assert_eq!(gate.forget_all().await.expect("forget all"), 2);
    assert_eq!(gate.counter(&a).await.unwrap(), None);
    assert_eq!(gate.counter(&b).await.unwrap(), None);
}

/// Redis loses a sold-out SKU's keys (a restart without persistence, a failover): the next
/// warm-up finds that the SKU has ledger rows and marks its done hash partial, so a replay of
/// a key committed before is answered as a replay, not refused; a new key is still refused,
/// after one key lookup in the database. A SKU born through the gate has a complete done hash
/// and refuses with no lookup. Shown to catch the gate without the partial mark (the replay
/// was refused as insufficient stock).
async fn replays_survive_lost_redis_data<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("lost-data");
    store.create_sku(&s, 2).await.expect("create");
    let keyed = |key: &str| {
        DeductRequest::new(s.clone(), qty(1), Strategy::Guarded)
            .with_idempotency_key(IdempotencyKey::parse(key).unwrap())
    };
    let first = store.deduct(keyed("ld-1")).await.expect("sale");
    store.deduct(keyed("ld-2")).await.expect("sale");
    assert!(is_short(&store.deduct(keyed("ld-0")).await));
    assert_eq!(
        GateStats::get(&gate.stats().replay_lookups),
        0,
        "a complete done hash refuses without the database"
    );

    gate.forget(&s).await.expect("Redis loses the SKU's keys");
    let replay = store
        .deduct(keyed("ld-1"))
        .await
        .expect("a replay is answered, not refused");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, first.ledger_id);
    assert!(is_short(&store.deduct(keyed("ld-3")).await));
    assert_eq!(GateStats::get(&gate.stats().replay_lookups), 2);
    assert_eq!(stock(&store, &s).await, 0);
    assert_eq!(gate.counter(&s).await.unwrap(), Some(0));
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    forget(&gate, &[&s]).await;
}

/// A done hash is bounded: past `done_max` keys it is dropped and the SKU marked partial, so
/// memory stays bounded and a replay after sell-out is still answered (after a key lookup in
/// the database), never refused.
async fn the_done_hash_is_bounded<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|config| config.done_max = 3).await else {
        return;
    };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("done-bound");
    store.create_sku(&s, 5).await.expect("create");
    let keyed = |key: &str| {
        DeductRequest::new(s.clone(), qty(1), Strategy::Guarded)
            .with_idempotency_key(IdempotencyKey::parse(key).unwrap())
    };
    let mut sold = Vec::new();
    for n in 0..5 {
        sold.push(store.deduct(keyed(&format!("db-{n}"))).await.expect("sale"));
    }
    assert_eq!(
        GateStats::get(&gate.stats().done_trims),
        1,
        "trimmed once past 3 keys"
    );
    let mut raw = raw_redis().await;
    let held: i64 = raw.hlen(gate.done_key(&s)).await.unwrap();
    assert!(held <= 3, "the done hash holds {held} keys");
    let replay = store
        .deduct(keyed("db-0"))
        .await
        .expect("a replay after the trim is answered");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, sold[0].ledger_id);
    assert!(is_short(&store.deduct(keyed("db-new")).await));
    assert!(GateStats::get(&gate.stats().replay_lookups) >= 2);
    assert_eq!(stock(&store, &s).await, 0);
    forget(&gate, &[&s]).await;
}

/// With a scope (`hot-*`), only the hot SKUs touch Redis: a cold SKU's deductions and order
/// lines go straight to the database with no counter made, priming skips it, and the hot
/// SKU is gated as before. Shown to catch a gate that ignores its scope: without the check
/// in `Gate::admit` the cold SKU gets a counter and this fails.
async fn only_scoped_skus_touch_redis<S: InventoryStore>(store: S) {
    let scope = GateScope::parse("hot-*").expect("scope");
    let Some(gate) = gate(|config| config.scope = scope).await else {
        return;
    };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let (hot, cold) = (sku("hot-1"), sku("cold-1"));
    store.create_sku(&hot, 5).await.expect("create");
    store.create_sku(&cold, 5).await.expect("create");
    assert_eq!(gate.counter(&hot).await.unwrap(), Some(5), "warmed on creation");
    store
        .deduct(DeductRequest::new(cold.clone(), qty(1), Strategy::Guarded))
        .await
        .expect("a cold sale");
    store
        .place_order(order("scoped-1", &[(&hot, 1), (&cold, 1)]))
        .await
        .expect("an order over both");
    assert!(is_short(
        &store
            .deduct(DeductRequest::new(hot.clone(), qty(9), Strategy::Guarded))
            .await
    ));
    gate.prime(&[(cold.clone(), 3)]).await.expect("prime");
    assert_eq!(
        gate.counter(&cold).await.unwrap(),
        None,
        "the cold SKU has no counter"
    );
    assert_eq!(gate.counter(&hot).await.unwrap(), Some(4));
    let stats = gate.stats();
    assert_eq!(GateStats::get(&stats.ungated), 2, "two cold lines went straight");
    assert_eq!(GateStats::get(&stats.admitted), 1);
    assert_eq!(GateStats::get(&stats.refused), 1);
    assert_eq!((stock(&store, &hot).await, stock(&store, &cold).await), (4, 3));
    let (reconciled, error) = gate.reconcile_all(store.inner()).await;
    assert!(error.is_none(), "{error:?}");
    assert_eq!(reconciled, 1, "only the hot SKU is reconciled");
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    gate.forget_all().await.expect("forget all");
}

/// A pass recomputes at most about `reconcile_batch` SKUs (SSCAN pages may overshoot), and
/// the next pass goes on where it stopped, so every counter is visited in a few passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_passes_are_bounded_and_resume() {
    let Some(gate) = gate(|config| config.reconcile_batch = 100).await else {
        return;
    };
    let Some((store, _guard)) = support::sqlite().await else {
        return;
    };
    let skus: Vec<_> = (0..300).map(|n| sku(&format!("batch-{n:03}"))).collect();
    for s in &skus {
        store.create_sku(s, 10).await.expect("create");
    }
    let primed: Vec<_> = skus.iter().map(|s| (s.clone(), 10)).collect();
    gate.prime(&primed).await.expect("prime");
    let (mut visited, mut passes) = (0, 0);
    while visited < skus.len() && passes < 10 {
        let (reconciled, error) = gate.reconcile_all(&store).await;
        assert!(error.is_none(), "{error:?}");
        assert!(reconciled <= 200, "a pass of batch 100 recomputed {reconciled}");
        visited += reconciled;
        passes += 1;
    }
    assert!(visited >= skus.len(), "{visited} visits in {passes} passes");
    assert!(passes >= 2, "one pass recomputed all 300");
    gate.forget_all().await.expect("forget all");
}

on_every_database!(
    flash_sale_sells_exactly_the_supply,
    refusals_and_replays_give_units_back,
    orders_are_admitted_line_by_line,
    unknown_outcomes_are_resolved_by_key,
    drift_is_reconciled_both_ways,
    priming_never_overwrites_a_counter,
    only_scoped_skus_touch_redis,
    replays_survive_lost_redis_data,
    the_done_hash_is_bounded,
);
