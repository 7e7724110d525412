//! Single uncontended deduction latency, per strategy per database, so regressions in the
//! per-request path show. One requester, one SKU per strategy, plenty of stock. Each
//! database gets a fresh, uniquely named database that is dropped afterwards; a database
//! that is not reachable is skipped with a message (the harness binary owns the CI policy).
// The engine's deduction future (retries, landing, resolution) nests deeper than the
// default limit of 128 once criterion wraps it.
#![recursion_limit = "256"]

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stockguard_api::AnyStore;
use stockguard_api::store::StoreSettings;
use stockguard_bench::db::{self, FreshDatabase};
use stockguard_bench::measure::open_store;
use stockguard_core::{DeductRequest, InventoryStore, Quantity, SkuId};
use stockguard_testkit::Backend;

/// Stock per benchmark SKU: far more than any sample count deducts.
const BENCH_STOCK: i64 = 1_000_000_000;

fn bench_store(c: &mut Criterion, runtime: &tokio::runtime::Runtime, backend: Backend, store: AnyStore) {
    let mut group = c.benchmark_group(format!("uncontended_deduct/{backend}"));
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1));
    for strategy in store.capabilities().strategies {
        let sku = SkuId::parse(format!("uncontended-{}", strategy.as_str())).expect("valid sku");
        runtime
            .block_on(store.create_sku(&sku, BENCH_STOCK))
            .expect("create the benchmark SKU");
        let quantity = Quantity::new(1).expect("valid quantity");
        group.bench_function(strategy.as_str(), |b| {
            b.to_async(runtime).iter(|| async {
                store
                    .deduct(DeductRequest::new(sku.clone(), quantity, strategy))
                    .await
                    .expect("an uncontended deduction succeeds")
            });
        });
    }
    group.finish();
    let report = runtime.block_on(store.audit()).expect("audit");
    assert!(report.is_clean(), "audit after the micro-bench: {report:?}");
    runtime.block_on(store.close());
}

fn uncontended(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    for backend in Backend::ALL {
        if let Err(reason) = runtime.block_on(db::reachable(backend)) {
            eprintln!("*** skipping {backend} micro-bench: unreachable ({reason}) ***");
            continue;
        }
        let database = runtime
            .block_on(FreshDatabase::create(backend))
            .expect("fresh database");
        let settings = StoreSettings::new(database.target().expect("the fresh database's target"));
        let store = runtime
            .block_on(open_store(settings))
            .expect("open and migrate the store");
        bench_store(c, &runtime, backend, store);
        runtime
            .block_on(database.drop_now())
            .expect("drop the bench database");
    }
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
