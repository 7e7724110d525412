//! Faults on a real MariaDB: the outcome contract when the connection is cut at COMMIT
//! (through a fault-injecting proxy), and each class of vendor error provoked once on a real
//! server: a killed connection, a server at its connection limit, a lock wait timeout, a
//! deadlock, a missing table.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection;
use stockguard_core::conformance::{self, WireCut};
use stockguard_core::engine::{ConnectRefusal, FaultKind};
use stockguard_core::{DeductError, DeductRequest, InventoryStore, Quantity, SkuId, Strategy};
use stockguard_mysql::{MySqlConfig, MySqlStore, classify};
use stockguard_testkit::{CutMode, FaultProxy, MariaDbOptions, PrivateMariaDb, TestDatabase};

const CUT_WAIT: Duration = Duration::from_secs(10);

fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("sku")
}

fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("quantity")
}

async fn store(url: &str, tweak: impl FnOnce(&mut MySqlConfig)) -> Arc<MySqlStore> {
    let mut config = MySqlConfig::new(url);
    config.acquire_timeout = Duration::from_secs(10);
    config.lock_timeout = Duration::from_secs(5);
    tweak(&mut config);
    let store = MySqlStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Arc::new(store)
}

fn cut_mode(cut: WireCut) -> CutMode {
    match cut {
        WireCut::AfterReply => CutMode::AfterReply,
        WireCut::BeforeSend => CutMode::BeforeSend,
    }
}

/// Every strategy commits with an explicit `COMMIT` here (MySQL has no `UPDATE … RETURNING`,
/// so even `Guarded` is a short transaction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lost_commit_on_the_wire_every_strategy() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    let store = store(&proxy.proxied_url(database.url()), |_| {}).await;
    for strategy in Strategy::ALL {
        conformance::lost_commit_on_the_wire(Arc::clone(&store), strategy, |_, cut| {
            let handle = proxy.arm_cut_after(b"COMMIT", cut_mode(cut));
            async move { matches!(handle.fired_within(CUT_WAIT).await, Ok(Some(_))) }
        })
        .await;
    }
    let resolved = store.stats().resolutions().map(|(_, count)| count).sum::<u64>();
    assert!(resolved > 0, "lost answers went through resolution");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lost_batch_commit_on_the_wire() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let proxy = FaultProxy::in_front_of(database.url()).await.expect("proxy");
    let store = store(&proxy.proxied_url(database.url()), |config| {
        config.engine.coalescer.max_wait = Duration::from_millis(50);
    })
    .await;
    conformance::lost_batch_commit_on_the_wire(Arc::clone(&store), || {
        let handle = proxy.arm_cut_after(b"COMMIT", CutMode::AfterReply);
        async move { matches!(handle.fired_within(CUT_WAIT).await, Ok(Some(_))) }
    })
    .await;
}

/// `KILL CONNECTION` on every pooled session (what a killed session gets: 1927, or a lost
/// connection): the next deductions run on fresh connections; none fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_killed_connections_are_retried() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let store = store(database.url(), |config| config.max_connections = 4).await;
    let s = sku("killed");
    store.create_sku(&s, 1_000).await.expect("create");
    let mut admin = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("admin");
    for round in 0..3 {
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
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT CAST(id AS SIGNED) FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()",
        )
        .fetch_all(&mut admin)
        .await
        .expect("processlist");
        assert!(!ids.is_empty(), "round {round}: no session to kill");
        for id in ids {
            // A session may end on its own meanwhile (1094 unknown thread): fine.
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
                .execute(&mut admin)
                .await;
        }
        for strategy in Strategy::ALL {
            store
                .deduct(DeductRequest::new(s.clone(), qty(1), strategy))
                .await
                .unwrap_or_else(|e| panic!("round {round}, {strategy}: {e:?}"));
        }
    }
    let mut victim = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("victim");
    let id: i64 = sqlx::query_scalar("SELECT CAST(CONNECTION_ID() AS SIGNED)")
        .fetch_one(&mut victim)
        .await
        .expect("id");
    sqlx::query(sqlx::AssertSqlSafe(format!("KILL CONNECTION {id}")))
        .execute(&mut admin)
        .await
        .expect("kill");
    let error = sqlx::query("SELECT 1")
        .execute(&mut victim)
        .await
        .expect_err("killed");
    assert_eq!(classify(error).kind(), FaultKind::ConnectionLost);
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// A private server at its connection limit (1040): opening a store is a definite
/// `Unavailable` naming the cause, and so is a deduction that needs a new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_too_many_connections_is_a_definite_refusal() {
    // MariaDB raises a limit below 10 to 10, and root gets one more slot.
    let Some(server) = PrivateMariaDb::start_or_skip(MariaDbOptions::new().max_connections(10)).await else {
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
        match sqlx::MySqlConnection::connect(&server.url()).await {
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
    let mut config = MySqlConfig::new(server.url());
    config.acquire_timeout = Duration::from_secs(1);
    let refused = MySqlStore::connect(config).await;
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

/// 1205 (lock wait timeout) and 1213 (deadlock), provoked with raw transactions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_lock_timeout_and_deadlock_map_to_their_kinds() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let store = store(database.url(), |config| {
        config.lock_timeout = Duration::from_secs(1)
    })
    .await;
    for name in ["a", "b"] {
        store.create_sku(&sku(name), 10).await.expect("create");
    }
    let mut holder = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("holder");
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
    let mut waiter = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("waiter");
    sqlx::query("SET SESSION innodb_lock_wait_timeout = 1")
        .execute(&mut waiter)
        .await
        .expect("set");
    sqlx::query("BEGIN").execute(&mut waiter).await.expect("begin");
    let timeout = sqlx::query("SELECT 1 FROM inventory WHERE sku = 'a' FOR UPDATE")
        .execute(&mut waiter)
        .await
        .expect_err("1205");
    assert_eq!(classify(timeout).kind(), FaultKind::LockTimeout);
    sqlx::query("ROLLBACK")
        .execute(&mut waiter)
        .await
        .expect("rollback");
    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");

    let mut first = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("first");
    let mut second = sqlx::MySqlConnection::connect(database.url())
        .await
        .expect("second");
    for (conn, row) in [(&mut first, "a"), (&mut second, "b")] {
        sqlx::query("BEGIN").execute(&mut *conn).await.expect("begin");
        sqlx::query("SELECT 1 FROM inventory WHERE sku = ? FOR UPDATE")
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

/// A missing table (1146) is a schema mismatch: `Internal` and a failed readiness ping.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_missing_table_is_internal_and_not_ready() {
    let Some(database) = TestDatabase::mysql().await else {
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

/// Galera's id settings on one private server: `innodb_autoinc_lock_mode = 2` and an
/// `auto_increment_increment` of 3 (ids neither contiguous nor dense, interleaved between
/// concurrent inserts). Coalesced batches still give every receipt its own ledger row,
/// because ids are read back by key, and the invariants hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_batches_read_ids_back_by_key_under_galera_id_settings() {
    let options = MariaDbOptions::new()
        .arg("--innodb-autoinc-lock-mode=2")
        .arg("--auto-increment-increment=3")
        .arg("--auto-increment-offset=2");
    let Some(server) = PrivateMariaDb::start_or_skip(options).await else {
        return;
    };
    let store = store(&server.url(), |_| {}).await;
    let (mode, step): (i64, i64) = sqlx::query_as(
        "SELECT CAST(@@innodb_autoinc_lock_mode AS SIGNED), CAST(@@auto_increment_increment AS SIGNED)",
    )
    .fetch_one(store.adapter().pool())
    .await
    .expect("settings");
    assert_eq!((mode, step), (2, 3), "the server runs with Galera's id settings");
    conformance::receipts_name_their_rows(Arc::clone(&store)).await;
    conformance::concurrent_invariants(Arc::clone(&store), Strategy::Coalesced, 4, 200).await;
}
