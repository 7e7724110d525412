//! The gate on private Redis servers: one that is killed and restarted (the Redis-down
//! policy, both ways), a 3-master Redis Cluster (orders whose SKUs live in different slots
//! are admitted line by line; one script across slots is refused with CROSSSLOT), and a
//! primary with a replica and three sentinels, failed over mid-sale.

mod support;

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::{DeductError, DeductRequest, InventoryStore, Strategy};
use stockguard_redis_gate::{Admission, GateStats, GatedStore, RedisDownPolicy};
use stockguard_testkit::{PrivateRedisCluster, PrivateRedisNode, PrivateRedisSentinel, ServerError};
use support::{gate_on, is_short, order, qty, sku, stock};

/// A private server, or `None` (skipped loudly) when Redis is not installed and no database
/// is required.
fn started<T>(server: Result<T, ServerError>) -> Option<T> {
    match server {
        Ok(server) => Some(server),
        Err(ServerError::NotInstalled(reason)) if !stockguard_testkit::database_required() => {
            eprintln!("\n*** SKIPPED PRIVATE REDIS TEST *** {reason}\n");
            None
        }
        Err(error) => panic!("could not start a private Redis: {error}"),
    }
}

/// Redis killed mid-sale: fail-open requests go to the database and stay exact; fail-closed
/// ones are refused with `Unavailable` and change nothing; a gate can start meanwhile.
/// Restarted empty, the counter is warmed from the database on the next admission.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_down_fails_open_or_closed() {
    let Some(mut redis) = started(
        tokio::task::spawn_blocking(PrivateRedisNode::start)
            .await
            .unwrap(),
    ) else {
        return;
    };
    let file = stockguard_testkit::TestSqliteFile::new();
    let url = redis.node.url();
    let fast = Duration::from_millis(300);
    let Some(open_gate) = gate_on(&url, |c| c.redis_timeout = fast).await else {
        return;
    };
    let namespace = open_gate.config().namespace.clone();
    let Some(closed_gate) = gate_on(&url, |c| {
        c.redis_timeout = fast;
        c.when_down = RedisDownPolicy::FailClosed;
        c.namespace = namespace;
    })
    .await
    else {
        return;
    };
    // Two services on one database: one fails open, one fails closed.
    let open = GatedStore::new(support::sqlite_on(&file).await, Arc::clone(&open_gate));
    let closed = GatedStore::new(support::sqlite_on(&file).await, Arc::clone(&closed_gate));
    let s = sku("down");
    open.create_sku(&s, 10).await.expect("create");
    let deduct = || DeductRequest::new(s.clone(), qty(1), Strategy::Guarded);
    open.deduct(deduct()).await.expect("through the gate");
    assert_eq!(GateStats::get(&open_gate.stats().admitted), 1);

    redis.node.kill();
    open.deduct(deduct())
        .await
        .expect("fail open: the database answers");
    assert!(GateStats::get(&open_gate.stats().passed) >= 1);
    assert!(GateStats::get(&open_gate.stats().redis_errors) >= 1);
    let refused = closed.deduct(deduct()).await;
    assert!(
        matches!(refused, Err(DeductError::Unavailable { .. })),
        "{refused:?}"
    );
    assert!(refused.as_ref().err().is_some_and(DeductError::nothing_changed));
    assert_eq!(GateStats::get(&closed_gate.stats().refused_redis_down), 1);
    assert!(!open_gate.ping().await);
    assert_eq!(stock(&open, &s).await, 8);
    // A service that starts while Redis is down starts (and fails open or closed) rather
    // than staying down with it.
    let mut late =
        stockguard_redis_gate::GateConfig::new(stockguard_redis_gate::RedisTarget::parse(&url).unwrap());
    late.redis_timeout = fast;
    let late = stockguard_redis_gate::Gate::connect(late)
        .await
        .expect("a gate starts with Redis down");
    assert!(!late.stats().redis_up(), "and says Redis is down");

    // Back, empty: the next admission warms the counter from the database (8), once the
    // connection manager has reconnected (bounded).
    let _redis = tokio::task::spawn_blocking(move || {
        redis.node.start().expect("restart");
        redis
    })
    .await
    .unwrap();
    let mut admitted = false;
    for _ in 0..50 {
        let before = GateStats::get(&open_gate.stats().admitted);
        open.deduct(deduct()).await.expect("deduct");
        if GateStats::get(&open_gate.stats().admitted) > before {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(admitted, "the gate never came back");
    let left = stock(&open, &s).await;
    assert_eq!(
        open_gate.counter(&s).await.unwrap(),
        Some(left),
        "warmed from the database"
    );
    let audit = open.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// On a 3-master cluster: a flash sale sells exactly its supply; an order over SKUs in
/// different slots is admitted line by line, and a short one gives every admitted line back;
/// one script over two slots is refused (CROSSSLOT), which is why lines go one by one. After
/// sell-out, the sold-out hint's snapshot runs on the cluster too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_admits_across_slots() {
    let Some(cluster) = started(
        tokio::task::spawn_blocking(|| PrivateRedisCluster::start(3))
            .await
            .unwrap(),
    ) else {
        return;
    };
    let Some((store, _guard)) = support::postgres().await else {
        return;
    };
    let Some(gate) = gate_on(&cluster.url(), |c| c.sold_out_hint = Duration::from_secs(2)).await else {
        return;
    };
    let store = Arc::new(GatedStore::new(store, Arc::clone(&gate)));

    let hot = sku("cluster-hot");
    store.create_sku(&hot, 20).await.expect("create");
    let buyers: Vec<_> = (0..120)
        .map(|_| {
            let (store, hot) = (Arc::clone(&store), hot.clone());
            tokio::spawn(async move {
                store
                    .deduct(DeductRequest::new(hot, qty(1), Strategy::Guarded))
                    .await
            })
        })
        .collect();
    let mut sold = 0;
    for buyer in buyers {
        match buyer.await.unwrap() {
            Ok(_) => sold += 1,
            answer if is_short(&answer) => {}
            Err(error) => panic!("{error:?}"),
        }
    }
    assert_eq!(sold, 20);
    assert_eq!(GateStats::get(&gate.stats().refused), 100);
    // The sold-out snapshot is a one-slot script too; the hint then refuses without Redis.
    for _ in 0..3 {
        assert!(is_short(
            &store
                .deduct(DeductRequest::new(hot.clone(), qty(1), Strategy::Guarded))
                .await
        ));
    }
    assert!(GateStats::get(&gate.stats().hints_taken) >= 1);
    assert!(GateStats::get(&gate.stats().refused_by_hint) >= 2);

    // Six SKUs: their hash tags spread them over the three masters' slots.
    let skus: Vec<_> = (0..6).map(|n| sku(&format!("cluster-line-{n}"))).collect();
    for (n, s) in skus.iter().enumerate() {
        store
            .create_sku(s, if n == 5 { 1 } else { 10 })
            .await
            .expect("create");
    }
    let all: Vec<_> = skus.iter().map(|s| (s, 1)).collect();
    store
        .place_order(order("cluster-o1", &all))
        .await
        .expect("an order across slots");
    let short = store.place_order(order("cluster-o2", &all)).await;
    assert!(
        matches!(&short, Err(DeductError::OrderShort { lines }) if lines.len() == 1),
        "{short:?}"
    );
    for (n, s) in skus.iter().enumerate() {
        let expected = if n == 5 { 0 } else { 9 };
        assert_eq!(gate.counter(s).await.unwrap(), Some(expected), "{s}");
        assert_eq!(stock(&*store, s).await, expected);
    }

    let client = redis::cluster::ClusterClient::new(cluster.node_urls()).unwrap();
    let mut raw = client.get_async_connection().await.unwrap();
    let across: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("return 1")
        .arg(2)
        .arg(gate.units_key(&skus[0]))
        .arg(gate.units_key(&skus[1]))
        .query_async(&mut raw)
        .await;
    let error = across.expect_err("one script over two slots");
    assert!(
        error.to_string().to_ascii_lowercase().contains("slot"),
        "expected a cross-slot refusal: {error}"
    );
    assert_eq!(
        gate.admit(
            store.inner(),
            &skus[0],
            &stockguard_core::IdempotencyKey::parse("cluster-raw").unwrap(),
            1
        )
        .await
        .unwrap(),
        Admission::Admitted
    );
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}

/// A sentinel failover mid-sale: the primary is SIGKILLed while buyers keep coming; the gate
/// fails open while the sentinels promote the replica, then follows them to it. Whatever the
/// replica did not get, the database decides every sale: after one reconcile the counter is
/// the database's stock, and a last wave sells exactly what is left (sold = supply).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_mid_sale_sells_exactly_the_supply() {
    let Some(mut topology) = started(
        tokio::task::spawn_blocking(PrivateRedisSentinel::start)
            .await
            .unwrap(),
    ) else {
        return;
    };
    let file = stockguard_testkit::TestSqliteFile::new();
    let Some(gate) = gate_on(&topology.url(), |c| c.redis_timeout = Duration::from_millis(300)).await else {
        return;
    };
    let store = Arc::new(GatedStore::new(
        support::sqlite_on(&file).await,
        Arc::clone(&gate),
    ));
    let s = sku("failover");
    // More than the buyers during the failover can take (at most 400), so units are left
    // for admissions after it.
    let supply = 500;
    store.create_sku(&s, supply).await.expect("create");
    let buy = |n: u32| {
        let (store, s) = (Arc::clone(&store), s.clone());
        async move {
            let key = stockguard_core::IdempotencyKey::parse(format!("fo-{n}")).unwrap();
            let answer = store
                .deduct(DeductRequest::new(s, qty(1), Strategy::Guarded).with_idempotency_key(key))
                .await;
            match answer {
                Ok(_) => 1,
                short if is_short(&short) => 0,
                Err(error) => panic!("every attempt is a sale or a refusal: {error:?}"),
            }
        }
    };
    let mut sold = 0;
    for n in 0..30 {
        sold += buy(n).await;
    }
    assert_eq!(sold, 30);
    let admitted_before = GateStats::get(&gate.stats().admitted);

    let old_primary = topology.primary_port();
    let failover = tokio::task::spawn_blocking(move || {
        let took = topology.kill_primary_and_wait_for_failover();
        (topology, took)
    });
    // Buyers throughout the failover (bounded: 400 attempts 10 ms apart).
    let mut n = 100;
    while !failover.is_finished() && n < 500 {
        sold += buy(n).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (topology, took) = failover.await.unwrap();
    let took = took.expect("the sentinels promoted the replica");
    assert_ne!(topology.primary_port(), old_primary, "failed over in {took:?}");
    assert!(
        GateStats::get(&gate.stats().redis_errors) >= 1,
        "the kill was seen"
    );

    // The gate follows the sentinels to the new primary (bounded).
    let mut followed = false;
    for _ in 0..50 {
        if gate.reconcile(store.inner(), &s).await.is_ok() {
            followed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(followed, "the gate never reached the new primary");
    let left = stock(&*store, &s).await;
    assert_eq!(
        gate.counter(&s).await.unwrap(),
        Some(left),
        "reconciled: no drift left"
    );
    for m in 0..(left + 20) {
        sold += buy(1_000 + u32::try_from(m).unwrap()).await;
    }
    assert!(
        GateStats::get(&gate.stats().admitted) > admitted_before,
        "admitted after the failover"
    );
    assert_eq!(sold, supply, "sold = supply: no oversell, no undersell");
    assert_eq!(stock(&*store, &s).await, 0);
    let audit = store.audit().await.expect("audit");
    assert!(audit.is_clean(), "{audit:?}");
}
