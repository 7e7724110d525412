//! The conformance suite: one set of tests that every strategy on every adapter passes
//! against a real database. Adapters run it with [`conformance_suite!`](crate::conformance_suite)
//! from an integration test, passing their own `setup()`.
//!
//! The concurrency checks assert the invariants directly, from the database's own rows:
//! - no stock below zero;
//! - `initial − final = Σ successful quantities = −Σ ledger deltas`, per SKU;
//! - ledger rows = successful deductions;
//! - exact sell-out: stock only falls in these tests, so every request refused with
//!   `InsufficientStock` must have asked for more than its SKU's final stock;
//! - the hot SKU's ledger is a serial history: each row's `stock_after` is the previous
//!   row's plus its delta.

mod adjustments;
mod audit;
mod concurrent;
mod contract;
mod holds;
mod order_batches;
mod orders;
mod replays;
mod sequential;
mod server;
mod state_machine;

use std::sync::Arc;
use std::time::Duration;

pub use adjustments::adjustment_semantics;
pub use audit::{incremental_audit_beside_writes, incremental_audit_reads_only_new_rows};
pub use concurrent::{
    cancelled_callers, coalesced_queue_depth_limit, concurrent_invariants, concurrent_invariants_across,
    idempotency_race, mixed_strategies, receipts_name_their_rows, sharded_spreads_on_contention_only,
};
pub use contract::{
    WireCut, every_change_carries_a_key, lost_answers_are_resolved, lost_batch_commit_on_the_wire,
    lost_commit_on_the_wire,
};
pub use holds::{
    confirm_races_expiry, hold_semantics, holds_expire_at_read_time, lost_hold_answers_are_resolved,
    partial_confirm_races_release,
};
pub use order_batches::coalesced_order_batches;
pub use orders::{
    PRE_ORDERS_SEED, lost_order_answers_are_resolved, opposite_orders_never_deadlock, order, order_semantics,
    orders_race_deductions, orders_take_sharded_stock, seeded_data_carries_forward,
};
pub use replays::{a_restock_key_is_refused_in_a_batch, retries_of_unremembered_keys};
pub use sequential::{
    conditional_deduction, restock_and_paging, restock_limit_counts_buckets, sequential_semantics,
};
pub use state_machine::{OrderParsing, state_machine, state_machine_with};

use crate::{
    DeductError, DeductRequest, IdempotencyKey, InventoryStore, LEDGER_PAGE_MAX, LedgerEntry, LedgerPage,
    Quantity, SkuId,
};

/// A store for one test, plus whatever keeps its database alive (dropped after the store).
pub struct Provisioned<S> {
    /// The store under test.
    pub store: Arc<S>,
    /// Dropped last: typically drops the test's database.
    pub guard: Box<dyn Send + Sync>,
}

impl<S> std::fmt::Debug for Provisioned<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Provisioned")
    }
}

/// How long each concurrency test hammers the store (`STOCKGUARD_CONFORMANCE_SECS`, default 2).
pub fn concurrency_duration() -> Duration {
    let secs = std::env::var("STOCKGUARD_CONFORMANCE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(2.0);
    Duration::from_secs_f64(secs)
}

pub(crate) fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("test sku id")
}

pub(crate) fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("test quantity")
}

pub(crate) fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("test key")
}

pub async fn full_ledger<S: InventoryStore>(store: &S, sku: &SkuId) -> Vec<LedgerEntry> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = store
            .ledger(sku, LedgerPage::after(after, LEDGER_PAGE_MAX).expect("page"))
            .await
            .expect("read ledger");
        let done = page.len() < LEDGER_PAGE_MAX as usize;
        after = page.last().map(|e| e.id);
        rows.extend(page);
        if done {
            return rows;
        }
    }
}

/// Retries the outcomes that mean "try again" (`LockTimeout`, which `NoWait` returns by
/// design, and `Conflict`, optimistic retries exhausted) a bounded number of times.
pub(crate) async fn deduct_patiently<S: InventoryStore>(
    store: &S,
    request: DeductRequest,
) -> Result<crate::Receipt, DeductError> {
    let mut last = None;
    for _ in 0..2_000 {
        match store.deduct(request.clone()).await {
            Err(error @ (DeductError::LockTimeout | DeductError::Conflict { .. })) => {
                last = Some(error);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            other => return other,
        }
    }
    Err(last.expect("at least one attempt"))
}

/// The checkout tests for one adapter (orders per order strategy, adjustments); invoked beside
/// [`conformance_suite!`](crate::conformance_suite).
#[macro_export]
macro_rules! checkout_conformance_tests {
    (
        setup = $setup:path,
        strategies = [$($name:ident : $strategy:ident),+ $(,)?],
        order_only = [$($order_name:ident : $order_strategy:ident),* $(,)?]
    ) => {
        /// The negative control of the state-machine test: a planted bug that checks a SKU's
        /// duplicate lines one by one (keeping the last) instead of summing them must be caught.
        #[test]
        fn state_machine_catches_unsummed_duplicate_lines() {
            let runtime = ::tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            let Some(provisioned) = runtime.block_on($setup()) else { return };
            let found = $crate::conformance::state_machine_with(
                &runtime,
                provisioned.store.clone(),
                $crate::Strategy::Guarded,
                $crate::conformance::OrderParsing::LastLineWins,
            );
            let failure = found.expect_err("the state-machine test missed unsummed duplicate lines");
            // Caught at an order, by the model's different answer to it.
            assert!(failure.contains(": Order {"), "caught elsewhere: {failure}");
            drop(provisioned);
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn adjustment_semantics() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::adjustment_semantics(&*provisioned.store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn holds_expire_at_read_time() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::holds_expire_at_read_time(&*provisioned.store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lost_hold_answers_are_resolved() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::lost_hold_answers_are_resolved(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn confirm_races_expiry() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::confirm_races_expiry(provisioned.store.clone(), 40).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn coalesced_order_batches() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::coalesced_order_batches(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn partial_confirm_races_release() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::partial_confirm_races_release(provisioned.store.clone(), 40).await;
        }

        $(
            mod $name {
                use $crate::OrderStrategy;
                const STRATEGY: OrderStrategy = OrderStrategy::$strategy;

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn hold_semantics() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::hold_semantics(&*provisioned.store, STRATEGY).await;
                }

                $crate::order_conformance_tests!(setup = $setup);
            }
        )+

        $(
            mod $order_name {
                use $crate::OrderStrategy;
                const STRATEGY: OrderStrategy = OrderStrategy::$order_strategy;

                $crate::order_conformance_tests!(setup = $setup);
            }
        )*
    };
}

/// The order tests for one order strategy (`STRATEGY` in scope); part of
/// [`checkout_conformance_tests!`](crate::checkout_conformance_tests).
#[doc(hidden)]
#[macro_export]
macro_rules! order_conformance_tests {
    (setup = $setup:path) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn order_semantics() {
            let Some(provisioned) = $setup().await else {
                return;
            };
            $crate::conformance::order_semantics(&*provisioned.store, STRATEGY).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn lost_order_answers_are_resolved() {
            let Some(provisioned) = $setup().await else {
                return;
            };
            $crate::conformance::lost_order_answers_are_resolved(provisioned.store.clone(), STRATEGY).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn opposite_orders_never_deadlock() {
            let Some(provisioned) = $setup().await else {
                return;
            };
            $crate::conformance::opposite_orders_never_deadlock(
                provisioned.store.clone(),
                STRATEGY,
                64,
                1_000,
            )
            .await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn orders_race_deductions() {
            let Some(provisioned) = $setup().await else {
                return;
            };
            $crate::conformance::orders_race_deductions(provisioned.store.clone(), STRATEGY, 32).await;
        }
    };
}

/// Generates the conformance tests for one adapter.
///
/// ```text
/// mod postgres {
///     stockguard_core::conformance_suite!(
///         setup = crate::setup,
///         strategies = [pessimistic: Pessimistic, guarded: Guarded]
///     );
/// }
/// ```
/// `setup` is an `async fn() -> Provisioned<S>` that creates a fresh database. The test
/// names then read `postgres::guarded::concurrent_one_hot_sku`.
#[macro_export]
macro_rules! conformance_suite {
    (setup = $setup:path, strategies = [$($name:ident : $strategy:ident),+ $(,)?]) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn restock_and_paging() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::restock_and_paging(&*provisioned.store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn receipts_name_their_rows() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::receipts_name_their_rows(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn conditional_deduction() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::conditional_deduction(&*provisioned.store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_change_carries_a_key() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::every_change_carries_a_key(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn incremental_audit_beside_writes() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::incremental_audit_beside_writes(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn a_restock_key_is_refused_in_a_batch() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::a_restock_key_is_refused_in_a_batch(provisioned.store.clone()).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn mixed_strategies_one_hot_sku() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::mixed_strategies(provisioned.store.clone(), 1, 400).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn mixed_strategies_ten_skus() {
            let Some(provisioned) = $setup().await else { return };
            $crate::conformance::mixed_strategies(provisioned.store.clone(), 10, 60).await;
        }

        $(
            mod $name {
                use $crate::Strategy;
                const STRATEGY: Strategy = Strategy::$strategy;

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sequential_semantics() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::sequential_semantics(&*provisioned.store, STRATEGY).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn incremental_audit_reads_only_new_rows() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::incremental_audit_reads_only_new_rows(&*provisioned.store, STRATEGY).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn lost_answers_are_resolved() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::lost_answers_are_resolved(provisioned.store.clone(), STRATEGY).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn idempotency_race() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::idempotency_race(provisioned.store.clone(), STRATEGY).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn concurrent_one_hot_sku() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::concurrent_invariants(provisioned.store.clone(), STRATEGY, 1, 400).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn cancelled_callers() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::cancelled_callers(provisioned.store.clone(), STRATEGY).await;
                }

                #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn concurrent_hundred_skus() {
                    let Some(provisioned) = $setup().await else { return };
                    $crate::conformance::concurrent_invariants(provisioned.store.clone(), STRATEGY, 100, 30).await;
                }

                #[test]
                fn state_machine_matches_reference_model() {
                    let runtime = ::tokio::runtime::Builder::new_multi_thread()
                        .worker_threads(2)
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let Some(provisioned) = runtime.block_on($setup()) else { return };
                    $crate::conformance::state_machine(&runtime, provisioned.store.clone(), STRATEGY);
                    drop(provisioned);
                }
            }
        )+
    };
}
