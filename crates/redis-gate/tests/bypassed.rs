//! Sales the gate let through without a record must still be replayed after sell-out. Their
//! keys never reached the done hash, so, left alone, a client retrying one after the counter
//! reached 0 would be refused (`insufficient_stock`) although its first request committed.
//! Both tests are shown to catch a gate that does not remember them (`Gate::finish_bypassed`
//! a no-op): the replay is refused as short.

#[macro_use]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use stockguard_core::{DeductRequest, IdempotencyKey, InventoryStore, Strategy};
use stockguard_redis_gate::{Admission, GateStats, GatedStore, Outcome};
use stockguard_testkit::PrivateRedisNode;
use support::{gate, gate_on, is_short, qty, sku, stock};

/// Redis up, the key in flight for other units: the second request goes to the database
/// with no record and commits all the stock; the first gives its unit back. After a reconcile
/// the counter is 0, and a retry of the committed key is answered as a replay.
async fn sales_without_a_record_replay_after_sell_out<S: InventoryStore>(store: S) {
    let Some(gate) = gate(|_| {}).await else { return };
    let store = GatedStore::new(store, Arc::clone(&gate));
    let s = sku("bypass");
    store.create_sku(&s, 2).await.expect("create");
    let key = IdempotencyKey::parse("bypass-1").unwrap();
    let request = |units| {
        DeductRequest::new(s.clone(), qty(units), Strategy::Guarded).with_idempotency_key(key.clone())
    };
    assert_eq!(
        gate.admit(store.inner(), &s, &key, 1).await.unwrap(),
        Admission::Admitted,
        "one unit in flight under the key"
    );
    let first = store
        .deduct(request(2))
        .await
        .expect("the database commits both units");
    assert_eq!(GateStats::get(&gate.stats().bypassed), 1);
    // The in-flight request reaches the database, which refuses the reused key.
    let reused = store.inner().deduct(request(1)).await;
    assert!(reused.is_err(), "{reused:?}");
    gate.finish(&s, &key, Outcome::NothingChanged).await;
    assert_eq!(
        gate.reconcile(store.inner(), &s).await.expect("reconcile").after,
        0
    );

    let replay = store
        .deduct(request(2))
        .await
        .expect("the retry is replayed, not refused");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, first.ledger_id);
    let other = IdempotencyKey::parse("bypass-2").unwrap();
    assert!(is_short(
        &store
            .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Guarded).with_idempotency_key(other))
            .await
    ));
    assert_eq!(stock(&store, &s).await, 0);
    assert_eq!(GateStats::get(&gate.stats().bypass_recorded), 1);
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
    gate.forget(&s).await.expect("forget");
}

on_every_database!(sales_without_a_record_replay_after_sell_out);

/// Redis paused (`CLIENT PAUSE`: it keeps its data, as after a network blip): the gate fails
/// open and the sale commits in the database alone. Once Redis answers, a reconcile sets the
/// counter to 0, and a retry of the key is replayed: the gate wrote the key to the done hash
/// before deciding the next admission. A new key is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sale_while_redis_is_paused_is_replayed_after_sell_out() {
    let Some(redis) = PrivateRedisNode::start_or_skip().await else {
        return;
    };
    let url = redis.node.url();
    let Some(gate) = gate_on(&url, |c| c.redis_timeout = Duration::from_millis(300)).await else {
        return;
    };
    let Some((inner, _guard)) = support::sqlite().await else {
        return;
    };
    let store = GatedStore::new(inner, Arc::clone(&gate));
    let s = sku("paused");
    store.create_sku(&s, 1).await.expect("create");
    let key = IdempotencyKey::parse("paused-1").unwrap();
    let request =
        || DeductRequest::new(s.clone(), qty(1), Strategy::Guarded).with_idempotency_key(key.clone());

    let mut raw = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pause_ms = 1_500;
    let paused_at = Instant::now();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(pause_ms)
        .arg("ALL")
        .query_async(&mut raw)
        .await
        .unwrap();
    let first = store
        .deduct(request())
        .await
        .expect("fail open: the database sells");
    assert_eq!(GateStats::get(&gate.stats().bypassed), 1);
    assert_eq!(
        GateStats::get(&gate.stats().bypass_recorded),
        0,
        "Redis is paused"
    );
    tokio::time::sleep(Duration::from_millis(pause_ms + 200).saturating_sub(paused_at.elapsed())).await;

    // Another path (here the single-SKU reconcile, which does not flush) sets the counter
    // to the database's 0 before this gate's next admission.
    let mut reconciled = None;
    for _ in 0..20 {
        if let Ok(done) = gate.reconcile(store.inner(), &s).await {
            reconciled = Some(done);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reconciled.expect("Redis answers again").after, 0);
    let replay = store
        .deduct(request())
        .await
        .expect("the retry is replayed, not refused");
    assert!(replay.replayed);
    assert_eq!(replay.ledger_id, first.ledger_id);
    assert_eq!(GateStats::get(&gate.stats().bypass_recorded), 1);
    let other = IdempotencyKey::parse("paused-2").unwrap();
    assert!(is_short(
        &store
            .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Guarded).with_idempotency_key(other))
            .await
    ));
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}
