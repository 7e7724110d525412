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
}
