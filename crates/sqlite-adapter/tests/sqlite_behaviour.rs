//! SQLite-specific behaviour the shared suite cannot see: the connection settings, how the
//! write lock maps to `LockTimeout` for `NoWait` and `Pessimistic`, and the error mapping of
//! constraint violations. All on a real file.

use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::sqlite::SqliteConnection;
use stockguard_core::engine::FaultKind;
use stockguard_core::{DeductError, DeductRequest, InventoryStore, Quantity, RetryPolicy, SkuId, Strategy};
use stockguard_sqlite::{SqliteConfig, SqliteStore, classify};
use stockguard_testkit::TestSqliteFile;

fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("sku")
}

fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("quantity")
}

async fn open(file: &TestSqliteFile, configure: impl FnOnce(&mut SqliteConfig)) -> SqliteStore {
    let mut config = SqliteConfig::new(file.path());
    configure(&mut config);
    let store = SqliteStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

/// A second, independent connection that takes the database's write lock and keeps it.
async fn hold_write_lock(file: &TestSqliteFile) -> SqliteConnection {
    let url = format!("sqlite://{}", file.path().display());
    let mut holder = SqliteConnection::connect(&url).await.expect("holder connects");
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut holder)
        .await
        .expect("holder takes the write lock");
    holder
}

#[tokio::test]
async fn creates_the_file_and_runs_wal_full_sync_with_foreign_keys_and_the_busy_timeout() {
    let file = TestSqliteFile::new();
    assert!(!file.path().exists());
    let store = open(&file, |c| c.busy_timeout = Duration::from_millis(1_234)).await;
    assert!(file.path().exists(), "connect creates the database file");
    let pool = store.adapter().pool();
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await
        .unwrap();
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await
        .unwrap();
    let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(pool)
        .await
        .unwrap();
    let busy_timeout_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
        .fetch_one(pool)
        .await
        .unwrap();
    // synchronous: 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    assert_eq!(
        (journal.as_str(), synchronous, foreign_keys, busy_timeout_ms),
        ("wal", 2, 1, 1_234)
    );
    assert_eq!(store.backend(), "sqlite");
    assert!(!store.capabilities().row_level_locking);
    store.close().await;
}

#[tokio::test]
async fn no_wait_fails_at_once_and_pessimistic_waits_for_the_busy_timeout() {
    let file = TestSqliteFile::new();
    let busy_timeout = Duration::from_millis(400);
    // One pooled connection: the Pessimistic request below cannot borrow NoWait's (NoWait
    // has a pool of its own, whose busy timeout is 0).
    let store = open(&file, |c| {
        c.max_connections = 1;
        c.busy_timeout = busy_timeout;
        c.engine.retry = RetryPolicy::no_retry();
    })
    .await;
    let s = sku("locked");
    store.create_sku(&s, 10).await.expect("create");

    let mut holder = hold_write_lock(&file).await;
    let started = Instant::now();
    let no_wait = store
        .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::NoWait))
        .await;
    let no_wait_elapsed = started.elapsed();
    assert!(matches!(no_wait, Err(DeductError::LockTimeout)), "{no_wait:?}");
    assert!(
        no_wait_elapsed < busy_timeout / 2,
        "NoWait must not wait for the busy timeout (took {no_wait_elapsed:?})"
    );

    let started = Instant::now();
    let pessimistic = store
        .deduct(DeductRequest::new(s.clone(), qty(1), Strategy::Pessimistic))
        .await;
    let pessimistic_elapsed = started.elapsed();
    assert!(
        matches!(pessimistic, Err(DeductError::LockTimeout)),
        "{pessimistic:?}"
    );
    assert!(
        pessimistic_elapsed >= busy_timeout,
        "Pessimistic waits the whole busy timeout before giving up (took {pessimistic_elapsed:?})"
    );

    sqlx::query("ROLLBACK")
        .execute(&mut holder)
        .await
        .expect("release");
    for strategy in [Strategy::NoWait, Strategy::Pessimistic] {
        let receipt = store
            .deduct(DeductRequest::new(s.clone(), qty(1), strategy))
            .await
            .expect("lock free");
        assert!(!receipt.replayed);
    }
    assert_eq!(
        store.stock(&s).await.unwrap().stock,
        8,
        "the refused requests changed nothing"
    );
    holder.close().await.expect("close holder");
    store.close().await;
}

#[tokio::test]
async fn a_waiting_pessimistic_request_proceeds_once_the_lock_is_released() {
    let file = TestSqliteFile::new();
    let store = open(&file, |c| c.busy_timeout = Duration::from_secs(10)).await;
    let s = sku("waits");
    store.create_sku(&s, 10).await.expect("create");
    let mut holder = hold_write_lock(&file).await;
    let waiting = {
        let store = store.clone();
        let s = s.clone();
        tokio::spawn(async move {
            store
                .deduct(DeductRequest::new(s, qty(4), Strategy::Pessimistic))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "the request waits for the write lock");
    sqlx::query("COMMIT").execute(&mut holder).await.expect("release");
    let receipt = waiting.await.expect("join").expect("granted after release");
    assert_eq!(receipt.remaining, 6);
    assert!(
        receipt.lock_wait_us >= 150_000,
        "lock wait measured: {} µs",
        receipt.lock_wait_us
    );
    holder.close().await.expect("close holder");
    store.close().await;
}

#[tokio::test]
async fn constraint_violations_map_to_their_fault_kinds() {
    let file = TestSqliteFile::new();
    let store = open(&file, |_| {}).await;
    store.create_sku(&sku("c"), 3).await.expect("create");
    let pool = store.adapter().pool();

    let negative = sqlx::query("UPDATE inventory SET stock = -1 WHERE sku = 'c'")
        .execute(pool)
        .await
        .expect_err("CHECK (stock >= 0) refuses");
    assert_eq!(
        classify(negative).kind(),
        FaultKind::CheckViolation,
        "a CHECK violation is a broken guard"
    );

    let insert_keyed = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                        VALUES ('c', -1, 2, 'deduct', 'k1')";
    sqlx::query(insert_keyed).execute(pool).await.expect("first key");
    let duplicate = sqlx::query(insert_keyed)
        .execute(pool)
        .await
        .expect_err("UNIQUE key");
    assert_eq!(classify(duplicate).kind(), FaultKind::KeyTaken);

    let orphan = sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) VALUES ('nope', -1, 0, 'deduct')",
    )
    .execute(pool)
    .await
    .expect_err("foreign keys are enforced");
    assert_eq!(classify(orphan).kind(), FaultKind::Other);
    store.close().await;
}

/// Migration 2 rebuilds the ledger (SQLite cannot change a CHECK in place): a database
/// written before it keeps every row and id, its AUTOINCREMENT counter, its audit, and takes
/// orders afterwards.
#[tokio::test]
async fn the_orders_migration_moves_existing_data_forward() {
    let file = TestSqliteFile::new();
    let url = format!("sqlite://{}?mode=rwc", file.path().display());
    let pool = sqlx::SqlitePool::connect(&url).await.expect("pool");
    stockguard_sqlite::MIGRATOR
        .run_to(1, &pool)
        .await
        .expect("migration 1 only");
    sqlx::query("INSERT INTO inventory (sku, stock, initial_stock) VALUES ('old', 7, 10)")
        .execute(&pool)
        .await
        .expect("sku");
    for (delta, after, key) in [(-1, 9, "k1"), (-2, 7, "k2")] {
        sqlx::query(
            "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES ('old', ?1, ?2, 'deduct', ?3)",
        )
        .bind(delta)
        .bind(after)
        .bind(key)
        .execute(&pool)
        .await
        .expect("ledger row");
    }
    // A row deleted at the end must not let its id be reused (AUTOINCREMENT's promise).
    sqlx::query(
        "INSERT INTO inventory_ledger (sku, delta, stock_after, reason) VALUES ('old', 1, 8, 'restock')",
    )
    .execute(&pool)
    .await
    .expect("row 3");
    sqlx::query("DELETE FROM inventory_ledger WHERE id = 3")
        .execute(&pool)
        .await
        .expect("delete row 3");
    pool.close().await;

    let store = open(&file, |_| {}).await;
    let old = sku("old");
    let rows = stockguard_core::conformance::full_ledger(&store, &old).await;
    let kept: Vec<_> = rows
        .iter()
        .map(|r| (r.id, r.delta, r.idempotency_key.as_deref()))
        .collect();
    assert_eq!(kept, vec![(1, -1, Some("k1")), (2, -2, Some("k2"))]);
    assert!(store.audit().await.expect("audit").is_clean());
    let receipt = store
        .deduct(DeductRequest::new(old.clone(), qty(1), Strategy::Guarded))
        .await
        .expect("deduct after migrating");
    assert_eq!(receipt.ledger_id, 4, "ids keep growing past every id ever used");
    let order = stockguard_core::OrderRequest::new(
        stockguard_core::OrderId::parse("after-migration").expect("id"),
        vec![stockguard_core::OrderLine {
            sku: old.clone(),
            quantity: qty(2),
        }],
        stockguard_core::OrderStrategy::Locked,
    )
    .expect("order");
    store
        .place_order(order)
        .await
        .expect("orders work after migrating");
    assert_eq!(store.stock(&old).await.expect("stock").stock, 4);
    assert!(store.audit().await.expect("audit").is_clean());
}
