//! The core conformance suite on a real PostgreSQL, one fresh database per test. Test names
//! read `postgres::<strategy>::<case>`; the file is the same for every server adapter.

use std::time::Duration;

use stockguard_core::EngineConfig;
use stockguard_postgres::{PgConfig, PgStore};

async fn connect(url: &str, engine: impl FnOnce(&mut EngineConfig)) -> PgStore {
    let mut config = PgConfig::new(url);
    // 64 concurrent tasks share this pool; a generous acquire timeout keeps the test about
    // invariants, not pool exhaustion.
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(30);
    config.lock_timeout = Duration::from_secs(10);
    engine(&mut config.engine);
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

stockguard_core::server_conformance_tests!(
    name = postgres,
    store = PgStore,
    database = stockguard_testkit::TestDatabase::postgres,
    connect = crate::connect,
    count_buckets = "SELECT COUNT(*) FROM inventory_bucket WHERE sku = $1",
);
