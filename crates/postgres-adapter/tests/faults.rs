//! Faults on a real PostgreSQL: the outcome contract when the connection is cut at the commit
//! point (through a fault-injecting proxy), and each class of vendor error provoked once on a
//! real server: a terminated session, a server at its connection limit, a lock timeout, a
//! deadlock, a missing table. Each database here is a fresh one (or a private server).

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use stockguard_core::conformance::{self, WireCut};
use stockguard_core::engine::{ConnectRefusal, FaultKind};
use stockguard_core::{DeductError, DeductRequest, InventoryStore, Quantity, SkuId, Strategy};
use stockguard_postgres::{PgConfig, PgStore, classify};
use stockguard_testkit::{CutMode, CutPlan, FaultProxy, PostgresOptions, PrivatePostgres, TestDatabase};

const CUT_WAIT: Duration = Duration::from_secs(10);

fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("sku")
}

fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("quantity")
}

async fn store(url: &str, tweak: impl FnOnce(&mut PgConfig)) -> Arc<PgStore> {
    let mut config = PgConfig::new(url);
    config.acquire_timeout = Duration::from_secs(10);
    config.lock_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

fn cut_mode(cut: WireCut) -> CutMode {
    match cut {
        WireCut::AfterReply => CutMode::AfterReply,
        WireCut::BeforeSend => CutMode::BeforeSend,
    }
}

/// The statement that commits a deduction: `COMMIT` for the strategies that open a
/// transaction, else the single autocommit statement, recognised by the key among its
/// parameters (sqlx sends a cached statement's text only once per connection).
fn commit_point(strategy: Strategy, key: &stockguard_core::IdempotencyKey) -> Vec<u8> {
    match strategy {
        Strategy::Pessimistic | Strategy::NoWait => b"COMMIT".to_vec(),
        _ => key.as_str().as_bytes().to_vec(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_commit_on_the_wire_every_strategy() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    let store = store(&proxy.proxied_url(database.url()), |_| {}).await;
    for strategy in Strategy::ALL {
        conformance::lost_commit_on_the_wire(Arc::clone(&store), strategy, |key, cut| {
            let handle = proxy.arm_cut(CutPlan::new(commit_point(strategy, key), cut_mode(cut)));
            async move { matches!(handle.fired_within(CUT_WAIT).await, Ok(Some(_))) }
        })
        .await;
    }
    assert!(proxy.cuts_fired() >= 3 * Strategy::ALL.len() as u64);
    let resolved = store.stats().resolutions().map(|(_, count)| count).sum::<u64>();
    assert!(resolved > 0, "lost answers went through resolution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_batch_commit_on_the_wire() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    let store = store(&proxy.proxied_url(database.url()), |config| {
        // Long enough for six concurrent requests to join one batch.
        config.engine.coalescer.max_wait = Duration::from_millis(50);
    })
    .await;
    conformance::lost_batch_commit_on_the_wire(Arc::clone(&store), || {
        // PostgreSQL sends a batch the row covers as one autocommit statement
        // (`WRITE_BATCH_ALONE`): its answer is the one lost after the server applied it.
        let handle = proxy.arm_cut_after(b"AS t(q, upto, k, ord)", CutMode::AfterReply);
        async move { matches!(handle.fired_within(CUT_WAIT).await, Ok(Some(_))) }
    })
    .await;
}

/// `pg_terminate_backend` on every pooled session (57P01, the FATAL a killed session gets):
/// the next deductions run on fresh connections; none fails, none is a 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_terminated_sessions_are_retried() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store(database.url(), |config| config.max_connections = 4).await;
    let s = sku("terminated");
    store.create_sku(&s, 1_000).await.expect("create");
    let mut admin = sqlx::PgConnection::connect(database.url()).await.expect("admin");
    for round in 0..3 {
        // Fill the pool with live sessions, then kill them all.
        let warm: Vec<_> = (0..8)
            .map(|_| {
                let store = Arc::clone(&store);
                let s = s.clone();
                tokio::spawn(async move {
                    store
                        .deduct(DeductRequest::new(s, qty(1), Strategy::Guarded))
                        .await
                })
            })
            .collect();
        for task in warm {
            task.await.expect("join").expect("warm-up deduction");
        }
        let killed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&mut admin)
        .await
        .expect("terminate");
        assert!(killed > 0, "round {round}: no session to terminate");
        for strategy in [
            Strategy::Pessimistic,
            Strategy::Optimistic,
            Strategy::Guarded,
            Strategy::Coalesced,
        ] {
            store
                .deduct(DeductRequest::new(s.clone(), qty(1), strategy))
                .await
                .unwrap_or_else(|e| panic!("round {round}, {strategy}: {e:?}"));
        }
    }
    // The error a terminated session gets, mapped: a lost connection, never Internal.
    let mut victim = sqlx::PgConnection::connect(database.url()).await.expect("victim");
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&mut victim)
        .await
        .expect("pid");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&mut admin)
        .await
        .expect("terminate");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let error = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .expect_err("terminated");
    assert_eq!(classify(error).kind(), FaultKind::ConnectionLost);
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// A private server with `max_connections = 3`, all held: opening a store is a definite
/// `Unavailable` naming the cause, and so is a deduction that needs a new connection (53300).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_too_many_connections_is_a_definite_refusal() {
    let Some(server) = PrivatePostgres::start_or_skip(PostgresOptions::new().max_connections(3)).await else {
        return;
    };
    let store = store(&server.url(), |config| {
        config.max_connections = 4;
        config.acquire_timeout = Duration::from_secs(2);
        config.engine.deadline = Duration::from_secs(2);
    })
    .await;
    let s = sku("crowded");
    store.create_sku(&s, 10).await.expect("create");
    // Take every slot the store does not hold; the first holder also holds the SKU's row, so
    // the store's pooled connections all wait on it and one more request needs a new one.
    let mut holders = Vec::new();
    loop {
        match sqlx::PgConnection::connect(&server.url()).await {
            Ok(holder) => holders.push(holder),
            Err(error) => {
                assert_eq!(
                    classify(error).kind(),
                    FaultKind::ConnectRefused(ConnectRefusal::TooManyConnections)
                );
                break;
            }
        }
        assert!(holders.len() < 20, "the connection limit never bit");
    }
    sqlx::query("BEGIN")
        .execute(&mut holders[0])
        .await
        .expect("begin");
    sqlx::query("SELECT 1 FROM inventory WHERE sku = 'crowded' FOR UPDATE")
        .execute(&mut holders[0])
        .await
        .expect("lock");
    let mut config = PgConfig::new(server.url());
    config.acquire_timeout = Duration::from_secs(1);
    let refused = PgStore::connect(config).await;
    assert!(
        matches!(refused, Err(DeductError::Unavailable { reason, .. }) if reason.contains("too many connections")),
        "{refused:?}"
    );
    let pooled = usize::try_from(store.pool_status().size).expect("size");
    let requests: Vec<_> = (0..=pooled)
        .map(|_| {
            let store = Arc::clone(&store);
            let s = s.clone();
            tokio::spawn(async move {
                store
                    .deduct(DeductRequest::new(s, qty(1), Strategy::Pessimistic))
                    .await
            })
        })
        .collect();
    // Long enough for the extra request's connection attempts to run out of deadline.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    sqlx::query("ROLLBACK")
        .execute(&mut holders[0])
        .await
        .expect("release");
    let mut refusals = 0;
    let mut successes = 0;
    for request in requests {
        match request.await.expect("join") {
            Ok(_) => successes += 1,
            Err(DeductError::Unavailable { .. }) => refusals += 1,
            Err(other) => panic!("too many connections must be a definite 503, not {other:?}"),
        }
    }
    assert!(refusals >= 1, "a request needing a new connection was refused");
    drop(holders);
    let stock = store.stock(&s).await.expect("stock").stock;
    assert_eq!(
        stock,
        10 - successes,
        "refusals changed nothing ({refusals} refused)"
    );
}

/// 55P03 (lock timeout) and 40P01 (deadlock), provoked with raw transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lock_timeout_and_deadlock_map_to_their_kinds() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store(database.url(), |config| {
        config.lock_timeout = Duration::from_millis(300)
    })
    .await;
    for name in ["a", "b"] {
        store.create_sku(&sku(name), 10).await.expect("create");
    }
    let mut holder = sqlx::PgConnection::connect(database.url()).await.expect("holder");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM inventory WHERE sku = 'a' FOR UPDATE")
        .execute(&mut holder)
        .await
        .expect("lock");
    for strategy in [Strategy::Pessimistic, Strategy::NoWait] {
        let refused = store.deduct(DeductRequest::new(sku("a"), qty(1), strategy)).await;
        assert!(
            matches!(refused, Err(DeductError::LockTimeout)),
            "{strategy}: {refused:?}"
        );
    }
    let mut waiter = sqlx::PgConnection::connect(database.url()).await.expect("waiter");
    sqlx::query("SET lock_timeout = '100ms'")
        .execute(&mut waiter)
        .await
        .expect("set");
    let timeout = sqlx::query("SELECT 1 FROM inventory WHERE sku = 'a' FOR UPDATE")
        .execute(&mut waiter)
        .await
        .expect_err("55P03");
    assert_eq!(classify(timeout).kind(), FaultKind::LockTimeout);
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");

    // Two transactions locking a then b, and b then a.
    let mut first = sqlx::PgConnection::connect(database.url()).await.expect("first");
    let mut second = sqlx::PgConnection::connect(database.url()).await.expect("second");
    for (conn, row) in [(&mut first, "a"), (&mut second, "b")] {
        sqlx::query("BEGIN").execute(&mut *conn).await.expect("begin");
        sqlx::query("SELECT 1 FROM inventory WHERE sku = $1 FOR UPDATE")
            .bind(row)
            .execute(&mut *conn)
            .await
            .expect("lock");
    }
    let crossing = sqlx::query("SELECT 1 FROM inventory WHERE sku = 'b' FOR UPDATE").execute(&mut first);
    let closing = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sqlx::query("SELECT 1 FROM inventory WHERE sku = 'a' FOR UPDATE")
            .execute(&mut second)
            .await
    };
    let (crossed, closed) = tokio::join!(crossing, closing);
    let victim = crossed
        .err()
        .or(closed.err())
        .expect("one of them is the deadlock victim");
    assert_eq!(classify(victim).kind(), FaultKind::Deadlock);
}

/// A missing table is a schema mismatch: `Internal` (a 500 with the cause logged) and a failed
/// readiness ping, never a transient error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_missing_table_is_internal_and_not_ready() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store(database.url(), |_| {}).await;
    store.create_sku(&sku("gone"), 10).await.expect("create");
    store.ping().await.expect("ready");
    sqlx::query("DROP TABLE inventory_ledger")
        .execute(store.adapter().pool())
        .await
        .expect("drop");
    let broken = store
        .deduct(DeductRequest::new(sku("gone"), qty(1), Strategy::Guarded))
        .await;
    assert!(matches!(broken, Err(DeductError::Internal { .. })), "{broken:?}");
    assert!(matches!(store.ping().await, Err(DeductError::Internal { .. })));
}

/// The row strategies lock with `FOR NO KEY UPDATE`: a transaction holding the `FOR KEY SHARE`
/// lock that a ledger insert's foreign-key check takes (as a `Sharded` bucket deduction does)
/// does not block them. With `FOR UPDATE` this request would time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_row_locks_do_not_wait_for_key_share() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let store = store(database.url(), |config| {
        config.lock_timeout = Duration::from_millis(300)
    })
    .await;
    store.create_sku(&sku("fk"), 10).await.expect("create");
    let mut holder = sqlx::PgConnection::connect(database.url()).await.expect("holder");
    sqlx::query("BEGIN").execute(&mut holder).await.expect("begin");
    sqlx::query("SELECT 1 FROM inventory WHERE sku = 'fk' FOR KEY SHARE")
        .execute(&mut holder)
        .await
        .expect("key share");
    for strategy in [Strategy::Pessimistic, Strategy::NoWait, Strategy::Coalesced] {
        store
            .deduct(DeductRequest::new(sku("fk"), qty(1), strategy))
            .await
            .unwrap_or_else(|e| panic!("{strategy} waited for a KEY SHARE lock: {e:?}"));
    }
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
}

/// Found by the chaos runner: a repeat of a committed key whose connection is lost after its
/// write reached the server (the server answered with the key's unique violation; the answer
/// was dropped) is resolved by the key, and says `replayed: true`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_replay_whose_answer_is_lost_is_still_marked_replayed() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    // A store that remembers no keys: the repeat must reach the database to be cut.
    let store = store(&proxy.proxied_url(database.url()), |config| {
        config.engine.recent_keys_max = 0
    })
    .await;
    store.create_sku(&sku("hot"), 10).await.expect("create");
    let key = stockguard_core::IdempotencyKey::parse("replay-lost-1").expect("key");
    let request =
        || DeductRequest::new(sku("hot"), qty(1), Strategy::Guarded).with_idempotency_key(key.clone());
    let first = store.deduct(request()).await.expect("first");
    assert!(!first.replayed);
    let cut = proxy.arm_cut(CutPlan::new(key.as_str().as_bytes(), CutMode::AfterReply));
    let replay = store.deduct(request()).await.expect("replay");
    assert!(matches!(cut.fired_within(CUT_WAIT).await, Ok(Some(_))));
    assert_eq!(
        (replay.ledger_id, replay.remaining),
        (first.ledger_id, first.remaining)
    );
    assert!(replay.replayed, "a repeat of a committed key says replayed: true");
}

/// Found by the chaos runner (an acknowledged restock with no ledger row): a call cancelled
/// while its BEGIN is on the wire must not hand its connection back to the pool inside an open
/// transaction, where the next autocommit write would be acknowledged and then lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_call_cancelled_during_begin_loses_no_later_write() {
    let Some(database) = TestDatabase::postgres().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    let store = store(&proxy.proxied_url(database.url()), |config| {
        config.max_connections = 1
    })
    .await;
    let hot = sku("hot");
    store.create_sku(&hot, 10).await.expect("create");
    // Slow the wire, start a pessimistic deduction, and cancel it once the server has run its
    // BEGIN but before the answer (held by the proxy) reaches the store.
    proxy.delay(Duration::from_millis(300));
    let deduct = {
        let store = Arc::clone(&store);
        let request = DeductRequest::new(hot.clone(), qty(1), Strategy::Pessimistic);
        tokio::spawn(async move { store.deduct(request).await })
    };
    let mut admin = sqlx::PgConnection::connect(database.url()).await.expect("admin");
    let mut state: Option<String> = None;
    for _ in 0..300 {
        state = sqlx::query_scalar(
            "SELECT state FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .fetch_optional(&mut admin)
        .await
        .expect("state");
        if state.as_deref() == Some("idle in transaction") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    deduct.abort();
    assert_eq!(
        state.as_deref(),
        Some("idle in transaction"),
        "BEGIN never reached the server"
    );
    proxy.delay(Duration::ZERO);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let key = stockguard_core::IdempotencyKey::parse("after-cancelled-begin").expect("key");
    let receipt = store
        .restock(stockguard_core::RestockRequest::new(hot.clone(), qty(5)).with_idempotency_key(key.clone()))
        .await
        .expect("restock");
    // The connection ends (a reset, a restart, the pool retiring it): an open transaction
    // would roll back here.
    proxy.reset_all().await;
    store.close().await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM inventory_ledger WHERE idempotency_key = $1")
        .bind(key.as_str())
        .fetch_one(&mut admin)
        .await
        .expect("count");
    assert_eq!(
        rows, 1,
        "restock acknowledged as ledger row {} but not in the ledger",
        receipt.ledger_id
    );
}
