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

/// Retries of keys the engine does not remember (`recent_keys_max = 0`): the unique index,
/// not the lookup-free batch, decides, and every retry replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn memory_retries_of_forgotten_keys() {
    let mut config = MemoryConfig {
        lock_timeout: Duration::from_secs(10),
        ..MemoryConfig::default()
    };
    config.engine.recent_keys_max = 0;
    let store = Arc::new(MemoryStore::connect(config).await.expect("connect"));
    store.migrate().await.expect("migrate");
    stockguard_core::conformance::retries_of_unremembered_keys(Arc::clone(&store), store).await;
}

/// A client's retry of a deduction this engine committed is answered from its memory of
/// recent keys: the same receipt, and the database is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_a_remembered_retry_skips_the_database() {
    use stockguard_core::{DeductRequest, IdempotencyKey, InventoryStore, Quantity, SkuId, Strategy};
    let store = MemoryStore::connect(MemoryConfig::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let sku = SkuId::parse("remembered").unwrap();
    store.create_sku(&sku, 10).await.expect("create");
    let request = DeductRequest::new(sku.clone(), Quantity::new(3).unwrap(), Strategy::Coalesced)
        .with_idempotency_key(IdempotencyKey::parse("remember-me").unwrap());
    let first = store.deduct(request.clone()).await.expect("first");
    assert_eq!(store.stats().replays_from_memory(), 0);
    let retry = store.deduct(request).await.expect("retry");
    assert_eq!(store.stats().replays_from_memory(), 1);
    assert!(retry.replayed && !first.replayed);
    assert_eq!(
        (retry.ledger_id, retry.remaining),
        (first.ledger_id, first.remaining)
    );
    assert_eq!(store.stock(&sku).await.unwrap().stock, 7);
}

/// A strategy whose locking clause the probe found the server does not honour is refused on
/// every call, with the reason, changing nothing; it leaves the capabilities; the other
/// strategies still run; and a later probe that finds it honoured lets it run again. The
/// probe's answer is faked: no server here ignores `NOWAIT`.
#[tokio::test]
async fn memory_a_strategy_the_probe_finds_unhonoured_is_refused() {
    use stockguard_core::memory::MemoryBackend;
    use stockguard_core::{
        DeductError, DeductRequest, InvalidInput, InventoryStore, Quantity, ServerProbe, SkuId, Strategy,
        Support,
    };
    let store = MemoryStore::connect(MemoryConfig::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let sku = SkuId::parse("probed").unwrap();
    store.create_sku(&sku, 10).await.expect("create");
    let request = |strategy| DeductRequest::new(sku.clone(), Quantity::new(1).unwrap(), strategy);
    store
        .deduct(request(Strategy::NoWait))
        .await
        .expect("before any probe");
    let honest = store.probe().await.expect("probe");
    assert!(honest.refused.is_empty(), "{honest:?}");

    let backend: &MemoryBackend = store.adapter();
    backend.answer_probes_with(ServerProbe {
        nowait: Support::Ignored {
            how: "waited 1000 ms for the held row's lock".into(),
        },
        ..ServerProbe::without_row_locks("faked", "0".into())
    });
    let report = store.probe().await.expect("probe");
    assert_eq!(report.refused.len(), 1, "{report:?}");
    match store.deduct(request(Strategy::NoWait)).await {
        Err(DeductError::InvalidInput(InvalidInput::StrategyNotHonoured { strategy, reason, .. })) => {
            assert_eq!(strategy, Strategy::NoWait);
            assert!(reason.contains("FOR UPDATE NOWAIT"), "{reason}");
            assert!(reason.contains("waited 1000 ms"), "{reason}");
        }
        other => panic!("expected a refusal naming the clause, got {other:?}"),
    }
    assert_eq!(
        store.stock(&sku).await.expect("stock").stock,
        9,
        "the refusal changed nothing"
    );
    assert!(!store.capabilities().strategies.contains(&Strategy::NoWait));
    store
        .deduct(request(Strategy::Guarded))
        .await
        .expect("another strategy");

    backend.answer_probes_with(ServerProbe::without_row_locks("faked", "1".into()));
    assert!(store.probe().await.expect("probe").refused.is_empty());
    store
        .deduct(request(Strategy::NoWait))
        .await
        .expect("honoured again");
    assert_eq!(store.stock(&sku).await.expect("stock").stock, 7);
}
