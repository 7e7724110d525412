//! The core conformance suite on a real MariaDB (or MySQL, via `STOCKGUARD_MYSQL_URL`), one
//! fresh database per test. Test names read `mariadb::<strategy>::<case>`; the file is the same
//! for every server adapter.

use std::time::Duration;

use stockguard_core::EngineConfig;
use stockguard_mysql::{MySqlConfig, MySqlStore};

async fn connect(url: &str, engine: impl FnOnce(&mut EngineConfig)) -> MySqlStore {
    let mut config = MySqlConfig::new(url);
    // 64 concurrent tasks share this pool; a generous acquire timeout keeps the test about
    // invariants, not pool exhaustion.
    config.max_connections = 16;
    config.acquire_timeout = Duration::from_secs(30);
    config.lock_timeout = Duration::from_secs(10);
    engine(&mut config.engine);
    let store = MySqlStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    store
}

stockguard_core::server_conformance_tests!(
    name = mariadb,
    store = MySqlStore,
    database = stockguard_testkit::TestDatabase::mysql,
    connect = crate::connect,
    count_buckets = "SELECT COUNT(*) FROM inventory_bucket WHERE sku = ?",
);
