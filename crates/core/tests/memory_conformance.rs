//! The core conformance suite on the in-memory backend, one fresh store per test: the same
//! tests every database adapter runs, with every strategy the store declares (all but
//! `Sharded`, which one writer at a time has no use for).

use std::sync::Arc;
use std::time::Duration;

use stockguard_core::conformance::Provisioned;
use stockguard_core::memory::{MemoryConfig, MemoryStore};

async fn setup() -> Option<Provisioned<MemoryStore>> {
    let config = MemoryConfig {
        // As the SQLite suite's busy timeout: the tests are about invariants, not waiting.
        lock_timeout: Duration::from_secs(10),
        ..MemoryConfig::default()
    };
    let store = MemoryStore::connect(config).await.expect("connect");
    store.migrate().await.expect("migrate");
    Some(Provisioned {
        store: Arc::new(store),
        guard: Box::new(()),
    })
}

mod memory {
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
