//! Single uncontended deduction latency, per strategy per database, so regressions in the
//! per-request path show. One requester, one SKU per strategy, plenty of stock. Each
//! database gets a fresh, uniquely named database that is dropped afterwards; a database
//! that is not reachable is skipped with a message (the harness binary owns the CI policy).

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use stockguard_bench::db::{self, Backend, FreshDatabase};
use stockguard_core::{DeductRequest, InventoryStore, Quantity, SkuId};

/// Stock per benchmark SKU: far more than any sample count deducts.
const BENCH_STOCK: i64 = 1_000_000_000;

fn bench_store<S: InventoryStore>(
    c: &mut Criterion,
    runtime: &tokio::runtime::Runtime,
    backend: Backend,
    store: S,
) {
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
        let url = database.url().to_owned();
        match backend {
            Backend::Postgres => {
                let store = runtime
                    .block_on(stockguard_postgres::PgStore::connect(
                        stockguard_postgres::PgConfig::new(url),
                    ))
                    .expect("connect");
                runtime.block_on(store.migrate()).expect("migrate");
                bench_store(c, &runtime, backend, store);
            }
            #[cfg(feature = "mysql")]
            Backend::Mariadb => {
                let store = runtime
                    .block_on(stockguard_mysql::MySqlStore::connect(
                        stockguard_mysql::MySqlConfig::new(url),
                    ))
                    .expect("connect");
                runtime.block_on(store.migrate()).expect("migrate");
                bench_store(c, &runtime, backend, store);
            }
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => {
                let store = runtime
                    .block_on(stockguard_sqlite::SqliteStore::connect(
                        stockguard_sqlite::SqliteConfig::new(url),
                    ))
                    .expect("connect");
                runtime.block_on(store.migrate()).expect("migrate");
                bench_store(c, &runtime, backend, store);
            }
            #[allow(unreachable_patterns)]
            other => eprintln!("*** skipping {other} micro-bench: adapter not in this build ***"),
        }
        runtime
            .block_on(database.drop_now())
            .expect("drop the bench database");
    }
}

criterion_group!(benches, uncontended);
criterion_main!(benches);
