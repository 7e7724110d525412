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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::{Just, prop_assert, prop_assert_eq, prop_oneof};
use proptest::strategy::Strategy as _;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use rand::{Rng, SeedableRng};

use crate::model::ReferenceModel;
use crate::{
    DeductError, DeductRequest, IdempotencyKey, InvalidInput, InventoryStore, LEDGER_PAGE_MAX, LedgerEntry,
    LedgerPage, LedgerReason, Quantity, STOCK_MAX, SkuId, Strategy,
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

fn sku(name: &str) -> SkuId {
    SkuId::parse(name).expect("test sku id")
}

fn qty(units: i64) -> Quantity {
    Quantity::new(units).expect("test quantity")
}

fn key(raw: &str) -> IdempotencyKey {
    IdempotencyKey::parse(raw).expect("test key")
}

async fn full_ledger<S: InventoryStore>(store: &S, sku: &SkuId) -> Vec<LedgerEntry> {
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
async fn deduct_patiently<S: InventoryStore>(
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

/// Exact results of single requests: remaining stock, refusals that change nothing,
/// unknown SKUs, invalid input, idempotent replay and key reuse, restock, audit.
pub async fn sequential_semantics<S: InventoryStore>(store: &S, strategy: Strategy) {
    let prefix = format!("seq-{}", strategy.as_str());
    let a = sku(&format!("{prefix}-a"));
    assert_eq!(store.create_sku(&a, 10).await.expect("create").stock, 10);
    assert!(matches!(
        store.create_sku(&a, 5).await,
        Err(DeductError::AlreadyExists)
    ));
    assert!(matches!(
        store.create_sku(&sku(&format!("{prefix}-neg")), -1).await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert!(matches!(
        store
            .create_sku(&sku(&format!("{prefix}-big")), STOCK_MAX + 1)
            .await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert!(matches!(
        store.stock(&sku(&format!("{prefix}-neg"))).await,
        Err(DeductError::NotFound)
    ));

    let first = store
        .deduct(DeductRequest::new(a.clone(), qty(3), strategy))
        .await
        .expect("deduct 3");
    assert_eq!(
        (first.remaining, first.replayed, first.quantity),
        (7, false, qty(3))
    );
    assert!(first.attempts >= 1);

    let refused = store
        .deduct(DeductRequest::new(a.clone(), qty(8), strategy))
        .await;
    assert!(
        matches!(
            refused,
            Err(DeductError::InsufficientStock {
                requested: 8,
                available: 7
            })
        ),
        "{refused:?}"
    );
    assert_eq!(
        store.stock(&a).await.expect("stock").stock,
        7,
        "a refusal changes nothing"
    );

    let last = store
        .deduct(DeductRequest::new(a.clone(), qty(7), strategy))
        .await
        .expect("deduct 7");
    assert_eq!(last.remaining, 0);
    assert!(last.ledger_id > first.ledger_id);
    let empty = store
        .deduct(DeductRequest::new(a.clone(), qty(1), strategy))
        .await;
    assert!(matches!(
        empty,
        Err(DeductError::InsufficientStock {
            requested: 1,
            available: 0
        })
    ));

    let ledger = full_ledger(store, &a).await;
    let summary: Vec<(i64, i64, LedgerReason)> = ledger
        .iter()
        .map(|e| (e.delta, e.stock_after, e.reason))
        .collect();
    assert_eq!(
        summary,
        vec![(-3, 7, LedgerReason::Deduct), (-7, 0, LedgerReason::Deduct)]
    );
    assert_eq!(ledger[0].id, first.ledger_id);

    let missing = store
        .deduct(DeductRequest::new(
            sku(&format!("{prefix}-missing")),
            qty(1),
            strategy,
        ))
        .await;
    assert!(matches!(missing, Err(DeductError::NotFound)), "{missing:?}");
    assert!(matches!(
        store
            .ledger(&sku(&format!("{prefix}-missing")), LedgerPage::first(10).unwrap())
            .await,
        Err(DeductError::NotFound)
    ));

    // Idempotent replay: same key, same request → the first receipt, nothing changed.
    let b = sku(&format!("{prefix}-b"));
    store.create_sku(&b, 5).await.expect("create b");
    let k = key(&format!("{prefix}-key-1"));
    let original = store
        .deduct(DeductRequest::new(b.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
        .await
        .expect("keyed deduct");
    assert!(!original.replayed);
    let again = store
        .deduct(DeductRequest::new(b.clone(), qty(2), strategy).with_idempotency_key(k.clone()))
        .await
        .expect("replay");
    assert!(again.replayed);
    assert_eq!((again.ledger_id, again.remaining), (original.ledger_id, 3));
    assert_eq!(
        store.stock(&b).await.unwrap().stock,
        3,
        "a replay changes nothing"
    );
    let reused = store
        .deduct(DeductRequest::new(b.clone(), qty(1), strategy).with_idempotency_key(k.clone()))
        .await;
    assert!(
        matches!(reused, Err(DeductError::IdempotencyKeyReused)),
        "{reused:?}"
    );
    let reused_elsewhere = store
        .deduct(DeductRequest::new(a.clone(), qty(2), strategy).with_idempotency_key(k))
        .await;
    assert!(
        matches!(reused_elsewhere, Err(DeductError::IdempotencyKeyReused)),
        "{reused_elsewhere:?}"
    );
    // A refused keyed request records nothing, so the same key may succeed later.
    let k2 = key(&format!("{prefix}-key-2"));
    let too_much = store
        .deduct(DeductRequest::new(b.clone(), qty(4), strategy).with_idempotency_key(k2.clone()))
        .await;
    assert!(matches!(
        too_much,
        Err(DeductError::InsufficientStock {
            requested: 4,
            available: 3
        })
    ));
    store.restock(&b, qty(10)).await.expect("restock");
    let later = store
        .deduct(DeductRequest::new(b.clone(), qty(4), strategy).with_idempotency_key(k2))
        .await
        .expect("keyed deduct after restock");
    assert_eq!((later.remaining, later.replayed), (9, false));
    assert_eq!(full_ledger(store, &b).await.len(), 3);

    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

/// Restock limits and ledger paging (strategy-independent).
pub async fn restock_and_paging<S: InventoryStore>(store: &S) {
    let s = sku("page-sku");
    store.create_sku(&s, 0).await.expect("create");
    for i in 1..=7 {
        let receipt = store.restock(&s, qty(i)).await.expect("restock");
        assert_eq!(receipt.stock_after, (1..=i).sum::<i64>());
    }
    assert!(matches!(
        store.restock(&sku("page-missing"), qty(1)).await,
        Err(DeductError::NotFound)
    ));
    let big = sku("page-big");
    store.create_sku(&big, STOCK_MAX).await.expect("create at max");
    assert!(matches!(
        store.restock(&big, qty(1)).await,
        Err(DeductError::InvalidInput(InvalidInput::StockOutOfRange { .. }))
    ));
    assert_eq!(
        store.stock(&big).await.unwrap().stock,
        STOCK_MAX,
        "refused restock changes nothing"
    );

    let page1 = store.ledger(&s, LedgerPage::first(3).unwrap()).await.unwrap();
    let page2 = store
        .ledger(&s, LedgerPage::after(page1.last().map(|e| e.id), 3).unwrap())
        .await
        .unwrap();
    let page3 = store
        .ledger(&s, LedgerPage::after(page2.last().map(|e| e.id), 3).unwrap())
        .await
        .unwrap();
    let deltas: Vec<i64> = page1
        .iter()
        .chain(&page2)
        .chain(&page3)
        .map(|e| e.delta)
        .collect();
    assert_eq!(deltas, vec![1, 2, 3, 4, 5, 6, 7]);
    assert!(
        page1
            .iter()
            .all(|e| e.reason == LedgerReason::Restock && e.sku == s)
    );
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.ledger_rows, 7);
}

/// Many concurrent deductions with one idempotency key apply exactly once.
pub async fn idempotency_race<S: InventoryStore>(store: Arc<S>, strategy: Strategy) {
    let s = sku(&format!("race-{}", strategy.as_str()));
    store.create_sku(&s, 1_000).await.expect("create");
    let k = key(&format!("race-key-{}", strategy.as_str()));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = Arc::clone(&store);
        let request = DeductRequest::new(s.clone(), qty(5), strategy).with_idempotency_key(k.clone());
        tasks.push(tokio::spawn(
            async move { deduct_patiently(&*store, request).await },
        ));
    }
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(task.await.expect("join").expect("every racer gets the receipt"));
    }
    let originals = receipts.iter().filter(|r| !r.replayed).count();
    assert_eq!(
        originals, 1,
        "exactly one racer applies the deduction: {receipts:?}"
    );
    assert!(
        receipts
            .iter()
            .all(|r| r.ledger_id == receipts[0].ledger_id && r.remaining == 995)
    );
    assert_eq!(store.stock(&s).await.unwrap().stock, 995);
    assert_eq!(full_ledger(&*store, &s).await.len(), 1);
}

#[derive(Default, Debug)]
struct Tally {
    succeeded_units: i64,
    successes: i64,
    smallest_refused: Option<i64>,
}

#[derive(Default, Debug)]
struct Outcomes {
    by_sku: HashMap<SkuId, Tally>,
    errors: BTreeMap<&'static str, u64>,
}

/// 64 tasks deduct random quantities (1..=5) from SKUs with limited stock until the
/// deadline (or sell-out), then every invariant is checked from the database's rows.
pub async fn concurrent_invariants<S: InventoryStore>(
    store: Arc<S>,
    strategy: Strategy,
    sku_count: usize,
    stock_per_sku: i64,
) {
    concurrent_invariants_across(vec![store], strategy, sku_count, stock_per_sku).await;
}

/// As [`concurrent_invariants`], with the 64 tasks spread over several independent store
/// instances on one database, as several api processes would be. For `Coalesced` this shows
/// that batches from different processes still serialise on the database row lock.
pub async fn concurrent_invariants_across<S: InventoryStore>(
    stores: Vec<Arc<S>>,
    strategy: Strategy,
    sku_count: usize,
    stock_per_sku: i64,
) {
    concurrent_mix(stores, &[strategy], sku_count, stock_per_sku).await;
}

/// Every strategy the store supports on the same SKUs at once (task `i` uses strategy
/// `i mod n`), with the same invariants: strategies that keep stock in different rows
/// (`Sharded` buckets vs the SKU row) must still sell out exactly and reconcile.
pub async fn mixed_strategies<S: InventoryStore>(store: Arc<S>, sku_count: usize, stock_per_sku: i64) {
    let strategies = store.capabilities().strategies;
    concurrent_mix(vec![store], &strategies, sku_count, stock_per_sku).await;
}

async fn concurrent_mix<S: InventoryStore>(
    stores: Vec<Arc<S>>,
    strategies: &[Strategy],
    sku_count: usize,
    stock_per_sku: i64,
) {
    const TASKS: usize = 64;
    assert!(!stores.is_empty() && !strategies.is_empty());
    let store = Arc::clone(&stores[0]);
    let strategy_label = match strategies {
        [one] => one.as_str().to_owned(),
        _ => "mixed".to_owned(),
    };
    let prefix = format!("conc{sku_count}-{strategy_label}");
    let skus: Vec<SkuId> = (0..sku_count).map(|i| sku(&format!("{prefix}-{i}"))).collect();
    for s in &skus {
        store.create_sku(s, stock_per_sku).await.expect("create");
    }
    let seed: u64 = rand::random();
    eprintln!(
        "conformance concurrent_invariants: backend={} strategy={strategy_label} skus={sku_count} seed={seed}",
        store.backend()
    );
    let deadline = Instant::now() + concurrency_duration();
    let skus = Arc::new(skus);
    let mut tasks = Vec::new();
    for task_index in 0..TASKS {
        let store = Arc::clone(&stores[task_index % stores.len()]);
        let strategy = strategies[task_index % strategies.len()];
        let skus = Arc::clone(&skus);
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(
                seed ^ (task_index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let mut outcomes = Outcomes::default();
            let mut sold_out: std::collections::HashSet<usize> = Default::default();
            while Instant::now() < deadline && sold_out.len() < skus.len() {
                let index = rng.random_range(0..skus.len());
                if sold_out.contains(&index) {
                    continue;
                }
                let units = rng.random_range(1..=5);
                let request = DeductRequest::new(skus[index].clone(), qty(units), strategy);
                let tally = outcomes.by_sku.entry(skus[index].clone()).or_default();
                match store.deduct(request).await {
                    Ok(receipt) => {
                        assert_eq!(receipt.quantity.get(), units);
                        assert!(receipt.remaining >= 0);
                        tally.succeeded_units += units;
                        tally.successes += 1;
                    }
                    Err(DeductError::InsufficientStock { requested, available }) => {
                        assert_eq!(requested, units);
                        assert!(
                            available < requested,
                            "refused {requested} with {available} available"
                        );
                        tally.smallest_refused = Some(tally.smallest_refused.map_or(units, |m| m.min(units)));
                        if available == 0 {
                            sold_out.insert(index);
                        }
                    }
                    Err(error @ (DeductError::Conflict { .. } | DeductError::LockTimeout)) => {
                        *outcomes.errors.entry(error.kind()).or_default() += 1;
                    }
                    Err(other) => panic!("unexpected error under concurrency ({strategy}): {other:?}"),
                }
            }
            outcomes
        }));
    }
    let mut total = Outcomes::default();
    for task in tasks {
        let outcomes = task.await.expect("a deducting task panicked");
        for (s, t) in outcomes.by_sku {
            let sum = total.by_sku.entry(s).or_default();
            sum.succeeded_units += t.succeeded_units;
            sum.successes += t.successes;
            sum.smallest_refused = match (sum.smallest_refused, t.smallest_refused) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for (kind, n) in outcomes.errors {
            *total.errors.entry(kind).or_default() += n;
        }
    }

    let snapshots: HashMap<SkuId, crate::SkuSnapshot> = store
        .snapshot()
        .await
        .expect("snapshot")
        .into_iter()
        .map(|s| (s.sku.clone(), s))
        .collect();
    let mut successes = 0;
    for s in skus.iter() {
        let snap = &snapshots[s];
        let tally = total.by_sku.remove(s).unwrap_or_default();
        successes += tally.successes;
        assert!(snap.stock >= 0, "{s}: negative stock {}", snap.stock);
        assert_eq!(snap.initial_stock, stock_per_sku);
        assert_eq!(
            snap.initial_stock - snap.stock,
            tally.succeeded_units,
            "{s}: initial − final must equal the units of successful deductions (seed {seed})"
        );
        assert_eq!(
            -snap.ledger_delta_sum, tally.succeeded_units,
            "{s}: −Σ ledger deltas (seed {seed})"
        );
        assert_eq!(
            snap.ledger_rows, tally.successes,
            "{s}: one ledger row per success (seed {seed})"
        );
        if let Some(smallest) = tally.smallest_refused {
            assert!(
                smallest > snap.stock,
                "{s}: a request for {smallest} was refused but {} units are left (seed {seed})",
                snap.stock
            );
        }
    }
    assert!(successes > 0, "no deduction succeeded: {:?}", total.errors);

    // The hot SKU's ledger must read as a serial history, where every row's `stock_after`
    // is exact; `Sharded` rows carry a snapshot estimate, which is at least bounded.
    let ledger = full_ledger(&*store, &skus[0]).await;
    let mut stock = stock_per_sku;
    let serial = strategies.iter().all(|s| s.exact_stock_after());
    for entry in &ledger {
        stock += entry.delta;
        if serial {
            assert_eq!(
                entry.stock_after, stock,
                "ledger row {} breaks the serial history (seed {seed})",
                entry.id
            );
        } else {
            assert!(
                (0..=stock_per_sku).contains(&entry.stock_after),
                "ledger row {} reports stock_after {} outside 0..={stock_per_sku} (seed {seed})",
                entry.id,
                entry.stock_after
            );
        }
    }
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
    eprintln!(
        "conformance concurrent_invariants: backend={} strategy={strategy_label} skus={sku_count} successes={successes} other_outcomes={:?}",
        store.backend(),
        total.errors
    );
}

/// Callers that give up while their deduction is queued or in flight (their future is
/// dropped) must not lose or double-apply it: after every caller retries with its own
/// idempotency key until it gets a receipt, each key has exactly one ledger row and the
/// stock and ledger reconcile.
pub async fn cancelled_callers<S: InventoryStore>(store: Arc<S>, strategy: Strategy) {
    const CALLERS: usize = 120;
    let s = sku(&format!("cancel-{}", strategy.as_str()));
    store.create_sku(&s, 100_000).await.expect("create");
    let seed: u64 = rand::random();
    eprintln!("conformance cancelled_callers: strategy={strategy} seed={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let store = Arc::clone(&store);
        let request = DeductRequest::new(s.clone(), qty([1, 2, 3][caller % 3]), strategy)
            .with_idempotency_key(key(&format!("cancel-{}-{caller}", strategy.as_str())));
        // Deadlines from "before the batch is taken" to "after it committed".
        let patience = Duration::from_micros(rng.random_range(0..3_000));
        tasks.push(tokio::spawn(async move {
            let first_try = tokio::time::timeout(patience, store.deduct(request.clone())).await;
            let gave_up = first_try.is_err();
            let receipt = match first_try {
                Ok(Ok(receipt)) => receipt,
                Ok(Err(error)) if error.is_retryable() => deduct_patiently(&*store, request)
                    .await
                    .expect("retry after a retryable error"),
                Ok(Err(error)) => panic!("uncancelled deduction failed: {error:?}"),
                Err(_) => deduct_patiently(&*store, request)
                    .await
                    .expect("retry after cancelling"),
            };
            (gave_up, receipt)
        }));
    }
    let mut units = 0;
    let mut gave_up = 0;
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (cancelled, receipt) = task.await.expect("join");
        gave_up += usize::from(cancelled);
        units += receipt.quantity.get();
        assert!(ids.insert(receipt.ledger_id), "two callers got one ledger row");
    }
    let ledger = full_ledger(&*store, &s).await;
    assert_eq!(
        ledger.len(),
        CALLERS,
        "exactly one ledger row per caller ({gave_up} gave up once)"
    );
    assert_eq!(store.stock(&s).await.unwrap().stock, 100_000 - units);
    let report = store.audit().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
    eprintln!("conformance cancelled_callers: strategy={strategy} callers={CALLERS} gave_up_once={gave_up}");
}

/// With a per-SKU queue depth limit of a few requests, 200 simultaneous `Coalesced` callers
/// must see some refusals with `Unavailable` ("coalescing queue full"): backpressure, not
/// unbounded queueing. Refused requests change nothing; everything accepted reconciles.
/// `store` must be configured with a small `max_queue_depth` (say 4).
pub async fn coalesced_queue_depth_limit<S: InventoryStore>(store: Arc<S>) {
    let s = sku("backpressure");
    store.create_sku(&s, 10_000).await.expect("create");
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let store = Arc::clone(&store);
            let request = DeductRequest::new(s.clone(), qty(1), Strategy::Coalesced);
            tokio::spawn(async move { store.deduct(request).await })
        })
        .collect();
    let (mut accepted, mut shed) = (0i64, 0);
    for task in tasks {
        match task.await.expect("join") {
            Ok(_) => accepted += 1,
            Err(DeductError::Unavailable { reason, .. }) => {
                assert_eq!(reason, "coalescing queue full");
                shed += 1;
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert!(shed > 0, "200 simultaneous callers must overflow a small queue");
    assert_eq!(store.stock(&s).await.expect("stock").stock, 10_000 - accepted);
    assert_eq!(
        full_ledger(&*store, &s).await.len(),
        usize::try_from(accepted).expect("count")
    );
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
    eprintln!("conformance coalesced_queue_depth_limit: accepted={accepted} shed={shed}");
}

/// `Sharded` spreads a SKU only when deductions meet on its row: 20 deductions one at a time
/// leave it unsharded, 64 tasks at once spread it over the default bucket count.
/// `bucket_rows` counts a SKU's bucket rows with the adapter's own SQL.
pub async fn sharded_spreads_on_contention_only<S, F, Fut>(store: Arc<S>, bucket_rows: F)
where
    S: InventoryStore,
    F: Fn(SkuId) -> Fut,
    Fut: std::future::Future<Output = i64>,
{
    let one = qty(1);
    let calm = sku("calm");
    store.create_sku(&calm, 100).await.expect("create");
    for _ in 0..20 {
        store
            .deduct(DeductRequest::new(calm.clone(), one, Strategy::Sharded))
            .await
            .expect("deduct");
    }
    assert_eq!(
        bucket_rows(calm).await,
        0,
        "sequential deductions must not spread"
    );

    let hot = sku("hot");
    store.create_sku(&hot, 10_000).await.expect("create");
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let store = Arc::clone(&store);
            let hot = hot.clone();
            tokio::spawn(async move {
                for _ in 0..10 {
                    store
                        .deduct(DeductRequest::new(hot.clone(), one, Strategy::Sharded))
                        .await
                        .expect("deduct");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("join");
    }
    assert_eq!(
        bucket_rows(hot.clone()).await,
        i64::from(crate::sharding::DEFAULT_SHARD_BUCKETS),
        "64 simultaneous deductions must spread the SKU"
    );
    assert_eq!(store.stock(&hot).await.expect("stock").stock, 10_000 - 640);
    let report = store.audit().await.expect("audit");
    assert!(report.is_clean(), "{report:?}");
}

#[derive(Debug, Clone)]
enum Op {
    Create { sku: u8, initial: i64 },
    Restock { sku: u8, units: i64 },
    Deduct { sku: u8, units: i64, key: Option<u8> },
    Stock { sku: u8 },
    Ledger { sku: u8 },
    Audit,
}

fn op_strategy() -> impl proptest::strategy::Strategy<Value = Op> {
    prop_oneof![
        2 => (0..4u8, 0..40i64).prop_map(|(sku, initial)| Op::Create { sku, initial }),
        1 => (0..4u8, 1..15i64).prop_map(|(sku, units)| Op::Restock { sku, units }),
        6 => (0..4u8, 1..12i64, proptest::option::of(0..4u8)).prop_map(|(sku, units, key)| Op::Deduct { sku, units, key }),
        1 => (0..4u8).prop_map(|sku| Op::Stock { sku }),
        1 => (0..4u8).prop_map(|sku| Op::Ledger { sku }),
        1 => Just(Op::Audit),
    ]
}

fn same_error(model: &DeductError, real: &DeductError) -> bool {
    match (model, real) {
        (
            DeductError::InsufficientStock {
                requested: a,
                available: b,
            },
            DeductError::InsufficientStock {
                requested: c,
                available: d,
            },
        ) => a == c && b == d,
        _ => model.kind() == real.kind(),
    }
}

/// Random operation sequences run against the reference model and the real store; every
/// result must match. Cases: `STOCKGUARD_PROPTEST_CASES` (default 24).
pub fn state_machine<S: InventoryStore>(
    runtime: &tokio::runtime::Runtime,
    store: Arc<S>,
    strategy: Strategy,
) {
    let cases = std::env::var("STOCKGUARD_PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let case_counter = std::sync::atomic::AtomicU64::new(0);
    let result = runner.run(&proptest::collection::vec(op_strategy(), 1..30), |ops| {
        let case = case_counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(run_case(&*store, strategy, case, &ops))
    });
    if let Err(failure) = result {
        panic!(
            "{} {strategy}: model and store disagree: {failure}",
            store.backend()
        );
    }
}

async fn run_case<S: InventoryStore>(
    store: &S,
    strategy: Strategy,
    case: u64,
    ops: &[Op],
) -> Result<(), TestCaseError> {
    let prefix = format!("sm-{}-{case}", strategy.as_str());
    let name = |i: u8| sku(&format!("{prefix}-{i}"));
    let mut model = ReferenceModel::new();
    let mut ids: HashMap<i64, i64> = HashMap::new();
    for (step, op) in ops.iter().enumerate() {
        let context = format!("step {step}: {op:?}");
        match op {
            Op::Create { sku, initial } => {
                let m = model.create_sku(&name(*sku), *initial);
                let r = store.create_sku(&name(*sku), *initial).await;
                match (&m, &r) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", context),
                    (Err(a), Err(b)) => prop_assert!(same_error(a, b), "{}: {:?} vs {:?}", context, a, b),
                    _ => prop_assert!(false, "{}: model {:?} vs store {:?}", context, m, r),
                }
            }
            Op::Restock { sku, units } => {
                let m = model.restock(&name(*sku), qty(*units));
                let r = store.restock(&name(*sku), qty(*units)).await;
                match (&m, &r) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(a.stock_after, b.stock_after, "{}", context);
                        ids.insert(a.ledger_id, b.ledger_id);
                    }
                    (Err(a), Err(b)) => prop_assert!(same_error(a, b), "{}: {:?} vs {:?}", context, a, b),
                    _ => prop_assert!(false, "{}: model {:?} vs store {:?}", context, m, r),
                }
            }
            Op::Deduct { sku, units, key: k } => {
                let mut request = DeductRequest::new(name(*sku), qty(*units), strategy);
                if let Some(k) = k {
                    request = request.with_idempotency_key(key(&format!("{prefix}-k{k}")));
                }
                let m = model.deduct(&request);
                let r = deduct_patiently(store, request).await;
                match (&m, &r) {
                    (Ok(a), Ok(b)) => {
                        prop_assert_eq!(
                            (a.remaining, a.replayed),
                            (b.remaining, b.replayed),
                            "{}",
                            context
                        );
                        if a.replayed {
                            prop_assert_eq!(ids.get(&a.ledger_id), Some(&b.ledger_id), "{}", context);
                        } else {
                            ids.insert(a.ledger_id, b.ledger_id);
                        }
                    }
                    (Err(a), Err(b)) => prop_assert!(same_error(a, b), "{}: {:?} vs {:?}", context, a, b),
                    _ => prop_assert!(false, "{}: model {:?} vs store {:?}", context, m, r),
                }
            }
            Op::Stock { sku } => {
                let m = model.stock(&name(*sku));
                let r = store.stock(&name(*sku)).await;
                match (&m, &r) {
                    (Ok(a), Ok(b)) => prop_assert_eq!(a, b, "{}", context),
                    (Err(a), Err(b)) => prop_assert!(same_error(a, b), "{}", context),
                    _ => prop_assert!(false, "{}: model {:?} vs store {:?}", context, m, r),
                }
            }
            Op::Ledger { sku } => {
                let page = LedgerPage::first(LEDGER_PAGE_MAX).expect("page");
                let m = model.ledger(&name(*sku), page);
                let r = store.ledger(&name(*sku), page).await;
                match (&m, &r) {
                    (Ok(a), Ok(b)) => {
                        let a: Vec<_> = a
                            .iter()
                            .map(|e| {
                                (
                                    ids.get(&e.id).copied(),
                                    e.delta,
                                    e.stock_after,
                                    e.reason,
                                    e.idempotency_key.clone(),
                                )
                            })
                            .collect();
                        let b: Vec<_> = b
                            .iter()
                            .map(|e| {
                                (
                                    Some(e.id),
                                    e.delta,
                                    e.stock_after,
                                    e.reason,
                                    e.idempotency_key.clone(),
                                )
                            })
                            .collect();
                        prop_assert_eq!(a, b, "{}", context);
                    }
                    (Err(a), Err(b)) => prop_assert!(same_error(a, b), "{}", context),
                    _ => prop_assert!(false, "{}: model {:?} vs store {:?}", context, m, r),
                }
            }
            Op::Audit => {
                let real: Vec<_> = store
                    .snapshot()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{context}: snapshot failed: {e}")))?
                    .into_iter()
                    .filter(|s| s.sku.as_str().starts_with(&format!("{prefix}-")))
                    .collect();
                let mut real = real;
                real.sort_by(|a, b| a.sku.cmp(&b.sku));
                prop_assert_eq!(model.snapshot(), real, "{}", context);
                let report = store
                    .audit()
                    .await
                    .map_err(|e| TestCaseError::fail(format!("{e}")))?;
                prop_assert!(report.is_clean(), "{}: {:?}", context, report);
            }
        }
    }
    Ok(())
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
