//! Many tasks at once: the invariants checked from the database's own rows.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::{concurrency_duration, deduct_patiently, full_ledger, key, qty, sku};
use crate::{DeductError, DeductRequest, InventoryStore, SkuId, Strategy};

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

/// Concurrent coalesced deductions of one SKU: every receipt names its own ledger row (the
/// row with the receipt's key, quantity and remaining), however the database hands out ids.
pub async fn receipts_name_their_rows<S: InventoryStore>(store: Arc<S>) {
    let s = sku("receipts");
    store.create_sku(&s, 10_000).await.expect("create");
    let tasks: Vec<_> = (1..=40)
        .map(|units| {
            let store = Arc::clone(&store);
            let s = s.clone();
            tokio::spawn(async move {
                store
                    .deduct(DeductRequest::new(s, qty(units), Strategy::Coalesced))
                    .await
            })
        })
        .collect();
    let mut receipts = Vec::new();
    for task in tasks {
        receipts.push(task.await.expect("join").expect("fits"));
    }
    let ledger = full_ledger(&*store, &s).await;
    assert_eq!(ledger.len(), 40);
    for receipt in &receipts {
        let row = ledger
            .iter()
            .find(|e| e.id == receipt.ledger_id)
            .expect("the receipt's row exists");
        assert_eq!(
            (row.delta, row.stock_after, row.idempotency_key.as_deref()),
            (
                -receipt.quantity.get(),
                receipt.remaining,
                Some(receipt.idempotency_key.as_str())
            ),
            "the receipt names its own ledger row"
        );
    }
}
