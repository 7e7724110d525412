//! The conformance tests of an adapter for a database server, as one macro: every adapter
//! test file is then the same few lines, differing only in how a store is opened.

/// Generates an adapter's whole conformance test file for a database server: the suite for
/// every strategy, again for `Sharded` spreading eagerly, and the tests that need a server (two
/// stores on one database, queue backpressure, spreading on contention only, restock's limit
/// counting buckets).
///
/// ```text
/// stockguard_core::server_conformance_tests!(
///     name = postgres,
///     store = PgStore,
///     database = stockguard_testkit::TestDatabase::postgres,
///     connect = crate::connect,
///     count_buckets = "SELECT COUNT(*) FROM inventory_bucket WHERE sku = $1",
/// );
/// ```
/// - `database`: `async fn() -> Option<D>` for a fresh database `D` with `fn url(&self) -> &str`
///   (dropped after the store);
/// - `connect`: `async fn(url: &str, engine: impl FnOnce(&mut EngineConfig)) -> S`, the store
///   opened and migrated, with the test's engine settings applied;
/// - `count_buckets`: the SQL counting a SKU's bucket rows (one parameter, the SKU).
// `crate::` is meant: the macro defines `setup` and friends at the root of the calling test
// crate, and the nested suites name them from there.
#[allow(clippy::crate_in_macro_def)]
#[macro_export]
macro_rules! server_conformance_tests {
    (name = $name:ident, store = $store:ty, database = $database:path, connect = $connect:path, count_buckets = $count_buckets:expr $(,)?) => {
        async fn provision_with(
            engine: impl FnOnce(&mut $crate::EngineConfig),
        ) -> Option<$crate::conformance::Provisioned<$store>> {
            let database = $database().await?;
            let store = $connect(database.url(), engine).await;
            Some($crate::conformance::Provisioned {
                store: ::std::sync::Arc::new(store),
                guard: ::std::boxed::Box::new(database),
            })
        }

        async fn setup() -> Option<$crate::conformance::Provisioned<$store>> {
            provision_with(|_| {}).await
        }

        /// `Sharded` spreading every SKU on its first deduction, so even the sequential and
        /// state-machine tests run on bucket rows rather than on an unsharded SKU's row.
        async fn setup_spread_eagerly() -> Option<$crate::conformance::Provisioned<$store>> {
            provision_with(|engine| engine.spread_eagerly = true).await
        }

        mod $name {
            $crate::conformance_suite!(
                setup = crate::setup,
                strategies = [
                    pessimistic: Pessimistic,
                    no_wait: NoWait,
                    optimistic: Optimistic,
                    guarded: Guarded,
                    coalesced: Coalesced,
                    sharded: Sharded,
                ]
            );

            mod orders {
                $crate::checkout_conformance_tests!(setup = crate::setup, strategies = [locked: Locked, guarded: Guarded], order_only = [coalesced: Coalesced]);

                /// An order whose SKU's units sit in `Sharded` buckets gathers them inside
                /// its own transaction.
                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn orders_take_sharded_stock() {
                    let Some(provisioned) = crate::setup_spread_eagerly().await else { return };
                    for strategy in $crate::OrderStrategy::ALL {
                        $crate::conformance::orders_take_sharded_stock(&*provisioned.store, strategy).await;
                    }
                }
            }

            mod spread_eagerly {
                $crate::conformance_suite!(
                    setup = crate::setup_spread_eagerly,
                    strategies = [sharded: Sharded]
                );
            }

            /// Group commit across processes: two independent stores (two pools, two
            /// coalescers) on one database, as two api instances would be. Their batches
            /// serialise on the row lock.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn coalesced_two_instances_one_database() {
                let Some(database) = $database().await else { return };
                let first = ::std::sync::Arc::new($connect(database.url(), |_| {}).await);
                let second = ::std::sync::Arc::new($connect(database.url(), |_| {}).await);
                $crate::conformance::concurrent_invariants_across(
                    vec![first, second],
                    $crate::Strategy::Coalesced,
                    1,
                    400,
                )
                .await;
            }

            /// Keys committed by one instance, retried through another that never saw them:
            /// the unique index, not the lookup-free batch, decides, and every retry replays.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn retries_of_keys_committed_by_another_instance() {
                let Some(database) = $database().await else { return };
                let first = ::std::sync::Arc::new($connect(database.url(), |_| {}).await);
                let second = ::std::sync::Arc::new($connect(database.url(), |_| {}).await);
                $crate::conformance::retries_of_unremembered_keys(first, second).await;
            }

            /// The same with one instance that remembers no keys (`recent_keys_max = 0`).
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn retries_of_forgotten_keys() {
                let Some(provisioned) = crate::provision_with(|engine| engine.recent_keys_max = 0).await else {
                    return;
                };
                let store = provisioned.store.clone();
                $crate::conformance::retries_of_unremembered_keys(store.clone(), store).await;
            }

            /// A full per-SKU queue refuses at once with `Unavailable` (backpressure).
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn coalesced_queue_depth_limit() {
                let Some(provisioned) = crate::provision_with(|engine| {
                    engine.coalescer.max_queue_depth = 4;
                    engine.coalescer.max_batch_size = 2;
                })
                .await
                else {
                    return;
                };
                $crate::conformance::coalesced_queue_depth_limit(provisioned.store.clone()).await;
            }

            /// `Sharded` spreads a SKU only when deductions meet on its row.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sharded_spreads_on_contention_only() {
                let Some(database) = $database().await else { return };
                let store = ::std::sync::Arc::new($connect(database.url(), |_| {}).await);
                let pool = store.adapter().pool().clone();
                $crate::conformance::sharded_spreads_on_contention_only(store, move |sku| {
                    let pool = pool.clone();
                    async move {
                        sqlx::query_scalar::<_, i64>($count_buckets)
                            .bind(sku.as_str().to_owned())
                            .fetch_one(&pool)
                            .await
                            .expect("count buckets")
                    }
                })
                .await;
            }

            /// Restock's `STOCK_MAX` guard counts a spread SKU's bucket stock, not just its row.
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn restock_limit_counts_buckets() {
                let Some(provisioned) = crate::setup_spread_eagerly().await else { return };
                $crate::conformance::restock_limit_counts_buckets(&*provisioned.store).await;
            }
        }
    };
}
