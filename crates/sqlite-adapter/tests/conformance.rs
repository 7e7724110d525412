//! The core conformance suite on a real SQLite file, one fresh file per test. A file (not
//! `:memory:`) because the concurrency tests need several connections to one database.

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::conformance::Provisioned;
use stockguard_sqlite::{SqliteConfig, SqliteStore};
use stockguard_testkit::TestSqliteFile;

async fn setup() -> Option<Provisioned<SqliteStore>> {
    let file = TestSqliteFile::new();
    let mut config = SqliteConfig::new(file.path());
    // 64 concurrent tasks share this pool, and SQLite admits one writer at a time: a
    // generous acquire timeout and busy timeout keep the test about invariants, not about
    // waiting. Eight connections keep the busy handler's polling writers few.
    config.max_connections = 8;
    config.acquire_timeout = Duration::from_secs(30);
    config.busy_timeout = Duration::from_secs(10);
    let store = SqliteStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(Provisioned {
        store: Arc::new(store),
        guard: Box::new(file),
    })
}

mod sqlite {
    stockguard_core::conformance_suite!(
        setup = crate::setup,
        strategies = [
            pessimistic: Pessimistic,
            no_wait: NoWait,
            optimistic: Optimistic,
            guarded: Guarded,
            coalesced: Coalesced,
        ]
    );

    mod orders {
        stockguard_core::checkout_conformance_tests!(setup = crate::setup, strategies = [locked: Locked, guarded: Guarded], order_only = [coalesced: Coalesced]);
    }
}

fn test_config(file: &TestSqliteFile) -> SqliteConfig {
    let mut config = SqliteConfig::new(file.path());
    config.acquire_timeout = Duration::from_secs(30);
    config.busy_timeout = Duration::from_secs(10);
    config
}

/// Group commit across processes: two independent stores (two pools, two coalescers) on one
/// file, as two api instances would be. Their batches serialise on SQLite's write lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_coalesced_two_instances_one_file() {
    let file = TestSqliteFile::new();
    let first = Arc::new(SqliteStore::connect(test_config(&file)).await.expect("connect"));
    first.migrate().await.expect("migrate");
    let second = Arc::new(SqliteStore::connect(test_config(&file)).await.expect("connect"));
    stockguard_core::conformance::concurrent_invariants_across(
        vec![first, second],
        stockguard_core::Strategy::Coalesced,
        1,
        400,
    )
    .await;
}

/// Keys committed by one instance, retried through another that never saw them: the unique
/// index, not the lookup-free batch, decides, and every retry replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_retries_of_keys_committed_by_another_instance() {
    let file = TestSqliteFile::new();
    let first = Arc::new(SqliteStore::connect(test_config(&file)).await.expect("connect"));
    first.migrate().await.expect("migrate");
    let second = Arc::new(SqliteStore::connect(test_config(&file)).await.expect("connect"));
    stockguard_core::conformance::retries_of_unremembered_keys(first, second).await;
}

/// The same with one instance that remembers no keys (`recent_keys_max = 0`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_retries_of_forgotten_keys() {
    let file = TestSqliteFile::new();
    let mut config = test_config(&file);
    config.engine.recent_keys_max = 0;
    let store = Arc::new(SqliteStore::connect(config).await.expect("connect"));
    store.migrate().await.expect("migrate");
    stockguard_core::conformance::retries_of_unremembered_keys(Arc::clone(&store), store).await;
}

/// A full per-SKU queue refuses at once with `Unavailable` (backpressure).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_coalesced_queue_depth_limit() {
    let file = TestSqliteFile::new();
    let mut config = test_config(&file);
    config.engine.coalescer.max_queue_depth = 4;
    config.engine.coalescer.max_batch_size = 2;
    let store = Arc::new(SqliteStore::connect(config).await.expect("connect"));
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
