//! The core conformance suite on a real MariaDB (or MySQL, via `STOCKGUARD_MYSQL_URL`), one
//! fresh database per test. Test names read `mariadb::<strategy>::<case>`.

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::conformance::Provisioned;
use stockguard_mysql::{MySqlConfig, MySqlStore};
use stockguard_testkit::TestDatabase;

async fn setup() -> Option<Provisioned<MySqlStore>> {
    provision(false).await
}

/// `Sharded` spreading every SKU on its first deduction, so even the sequential and
/// state-machine tests run on bucket rows rather than on an unsharded SKU's row.
async fn setup_spread_eagerly() -> Option<Provisioned<MySqlStore>> {
    provision(true).await
}

async fn provision(spread_eagerly: bool) -> Option<Provisioned<MySqlStore>> {
    let database = TestDatabase::mysql().await?;
    let mut config = MySqlConfig::new(database.url());
    config.engine.spread_eagerly = spread_eagerly;
    // 64 concurrent tasks share this pool; a generous acquire timeout keeps the test about
    // invariants, not pool exhaustion.
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(30);
    config.lock_timeout = Duration::from_secs(10);
    let store = MySqlStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(Provisioned {
        store: Arc::new(store),
        guard: Box::new(database),
    })
}

mod mariadb {
    stockguard_core::conformance_suite!(
        setup = crate::setup,
        strategies = [
            pessimistic: Pessimistic,
            no_wait: NoWait,
            optimistic: Optimistic,
            guarded: Guarded,
            coalesced: Coalesced,
            sharded: Sharded,
        ]
    );
}

mod mariadb_spread_eagerly {
    stockguard_core::conformance_suite!(
        setup = crate::setup_spread_eagerly,
        strategies = [sharded: Sharded]
    );
}

/// Group commit across processes: two independent stores (two pools, two coalescers) on one
/// database, as two api instances would be. Their batches serialise on the row lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_coalesced_two_instances_one_database() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let connect = || async {
        let mut config = MySqlConfig::new(database.url());
        config.acquire_timeout = Duration::from_secs(30);
        config.lock_timeout = Duration::from_secs(10);
        Arc::new(MySqlStore::connect(config).await.expect("connect"))
    };
    let first = connect().await;
    first.migrate().await.expect("migrate");
    let second = connect().await;
    stockguard_core::conformance::concurrent_invariants_across(
        vec![first, second],
        stockguard_core::Strategy::Coalesced,
        1,
        400,
    )
    .await;
}

/// A full per-SKU queue refuses at once with `Unavailable` (backpressure).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_coalesced_queue_depth_limit() {
    let Some(database) = TestDatabase::mysql().await else {
        return;
    };
    let mut config = MySqlConfig::new(database.url());
    config.engine.coalescer.max_queue_depth = 4;
    config.engine.coalescer.max_batch_size = 2;
    let store = Arc::new(MySqlStore::connect(config).await.expect("connect"));
    store.migrate().await.expect("migrate");
    stockguard_core::conformance::coalesced_queue_depth_limit(Arc::clone(&store)).await;
    assert!(
        store
            .coalescer()
            .stats()
            .rejected_queue_full
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
    );
}
/// `Sharded` spreads a SKU only when deductions meet on its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mariadb_sharded_spreads_on_contention_only() {
    let Some(provisioned) = setup().await else {
        return;
    };
    let pool = provisioned.store.adapter().pool().clone();
    stockguard_core::conformance::sharded_spreads_on_contention_only(provisioned.store.clone(), move |sku| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM inventory_bucket WHERE sku = ?")
                .bind(sku.as_str().to_owned())
                .fetch_one(&pool)
                .await
                .expect("count buckets")
        }
    })
    .await;
}

/// Restock's `STOCK_MAX` guard counts a spread SKU's bucket stock, not just its row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_restock_limit_counts_buckets() {
    let Some(provisioned) = setup_spread_eagerly().await else {
        return;
    };
    stockguard_core::conformance::restock_limit_counts_buckets(&*provisioned.store).await;
}
