//! The core conformance suite on a real MariaDB (or MySQL, via `STOCKGUARD_MYSQL_URL`), one
//! fresh database per test. Test names read `mariadb::<strategy>::<case>`.

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::conformance::Provisioned;
use stockguard_mysql::{MySqlConfig, MySqlStore};
use stockguard_testkit::TestDatabase;

async fn setup() -> Option<Provisioned<MySqlStore>> {
    let database = TestDatabase::mysql().await?;
    let mut config = MySqlConfig::new(database.url());
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
        ]
    );
}
