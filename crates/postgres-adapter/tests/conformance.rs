//! The core conformance suite on a real PostgreSQL, one fresh database per test.

use std::sync::Arc;

use stockguard_core::conformance::Provisioned;
use stockguard_postgres::{PgConfig, PgStore};
use stockguard_testkit::TestDatabase;

async fn setup() -> Option<Provisioned<PgStore>> {
    let database = TestDatabase::postgres().await?;
    let mut config = PgConfig::new(database.url());
    // 64 concurrent tasks share this pool; a generous acquire timeout keeps the test about
    // invariants, not pool exhaustion.
    config.max_connections = 16;
    config.acquire_timeout = std::time::Duration::from_secs(30);
    config.lock_timeout = std::time::Duration::from_secs(10);
    let store = PgStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(Provisioned {
        store: Arc::new(store),
        guard: Box::new(database),
    })
}

mod postgres {
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
