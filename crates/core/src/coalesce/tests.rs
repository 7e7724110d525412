//! The queue and the leader, over the reference model (adapters are tested against real
//! databases by the conformance suite).
use std::sync::atomic::{AtomicBool, AtomicUsize};

use super::*;
use crate::{DeductRequest, IdempotencyKey, Quantity, Receipt, Strategy};

/// An in-process executor over the reference model: enough to exercise the queue and the
/// leader (adapters are tested against real databases by the conformance suite).
struct ModelExecutor {
    model: std::sync::Mutex<crate::model::ReferenceModel>,
    panic_next: AtomicBool,
    batches: AtomicUsize,
    in_flight: AtomicUsize,
    most_in_flight: AtomicUsize,
}

impl BatchExecutor for ModelExecutor {
    type Item = BatchItem;
    type Receipt = Receipt;

    async fn execute_batch(&self, sku: &SkuId, items: &[BatchItem]) -> Vec<Result<Receipt, DeductError>> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1)).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        assert!(
            !self.panic_next.swap(false, Ordering::SeqCst),
            "injected executor panic"
        );
        self.batches.fetch_add(1, Ordering::SeqCst);
        let mut model = self.model.lock().unwrap();
        items
            .iter()
            .map(|item| {
                model.deduct(
                    &DeductRequest::new(sku.clone(), item.quantity, Strategy::Coalesced)
                        .with_idempotency_key(item.idempotency_key.clone()),
                )
            })
            .collect()
    }
}

fn coalescer_with(skus: &[&str], stock: i64, config: CoalescerConfig) -> Coalescer<ModelExecutor> {
    let mut model = crate::model::ReferenceModel::new();
    for sku in skus {
        model.create_sku(&SkuId::parse(*sku).unwrap(), stock).unwrap();
    }
    let executor = ModelExecutor {
        model: std::sync::Mutex::new(model),
        panic_next: AtomicBool::new(false),
        batches: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        most_in_flight: AtomicUsize::new(0),
    };
    Coalescer::new(executor, config)
}

fn item() -> BatchItem {
    BatchItem {
        quantity: Quantity::new(1).unwrap(),
        idempotency_key: IdempotencyKey::generate(),
        client_key: false,
    }
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// Submits `requests` one-unit deductions of `sku` at once and returns their receipts.
async fn submit_concurrently(
    coalescer: &Coalescer<ModelExecutor>,
    sku: &str,
    requests: usize,
) -> Vec<Receipt> {
    let sku = SkuId::parse(sku).unwrap();
    let tasks: Vec<_> = (0..requests)
        .map(|_| {
            let coalescer = coalescer.clone();
            let sku = sku.clone();
            tokio::spawn(async move { coalescer.submit(sku, item(), far()).await })
        })
        .collect();
    let mut receipts = Vec::with_capacity(requests);
    for task in tasks {
        receipts.push(task.await.unwrap().unwrap());
    }
    receipts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_batches_and_all_get_answers() {
    let coalescer = coalescer_with(&["hot"], 1_000, CoalescerConfig::default());
    submit_concurrently(&coalescer, "hot", 200).await;
    let batches = coalescer.executor().batches.load(Ordering::SeqCst);
    assert!(batches < 200, "200 concurrent requests took {batches} batches");
    assert_eq!(coalescer.stats().batched_requests.load(Ordering::Relaxed), 200);
    assert_eq!(coalescer.queue_depth(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_in_flight_are_bounded_across_skus() {
    let skus: Vec<String> = (0..32).map(|i| format!("s{i}")).collect();
    let names: Vec<&str> = skus.iter().map(String::as_str).collect();
    let config = CoalescerConfig {
        max_in_flight_batches: 3,
        ..CoalescerConfig::default()
    };
    let coalescer = coalescer_with(&names, 100, config);
    let tasks: Vec<_> = skus
        .iter()
        .flat_map(|sku| std::iter::repeat_n(sku.clone(), 4))
        .map(|sku| {
            let coalescer = coalescer.clone();
            tokio::spawn(async move { coalescer.submit(SkuId::parse(sku).unwrap(), item(), far()).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    let most = coalescer.executor().most_in_flight.load(Ordering::SeqCst);
    assert!((1..=3).contains(&most), "{most} batches ran at once, limit 3");
}

#[tokio::test]
async fn the_total_queue_bound_sheds_across_skus() {
    let config = CoalescerConfig {
        max_total_queued: 2,
        max_in_flight_batches: 1,
        ..CoalescerConfig::default()
    };
    let coalescer = coalescer_with(&["a", "b", "c"], 10, config);
    let a = coalescer.submit(SkuId::parse("a").unwrap(), item(), far());
    let b = coalescer.submit(SkuId::parse("b").unwrap(), item(), far());
    let c = coalescer.submit(SkuId::parse("c").unwrap(), item(), far());
    let (a, b, c) = tokio::join!(a, b, c);
    assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
    assert!(
        matches!(
            c,
            Err(DeductError::Unavailable {
                reason: "coalescing queue full",
                ..
            })
        ),
        "{c:?}"
    );
}

#[tokio::test]
async fn an_executor_panic_fails_its_batch_and_releases_leadership() {
    let coalescer = coalescer_with(&["hot"], 10, CoalescerConfig::default());
    let sku = SkuId::parse("hot").unwrap();
    coalescer.executor().panic_next.store(true, Ordering::SeqCst);
    let failed = coalescer.submit(sku.clone(), item(), far()).await;
    assert!(matches!(failed, Err(DeductError::Internal { .. })), "{failed:?}");
    // A stranded leader flag would park this request forever.
    let receipt = tokio::time::timeout(Duration::from_secs(10), coalescer.submit(sku, item(), far()))
        .await
        .expect("leadership was not released after the panic")
        .expect("a new leader takes over");
    assert_eq!(receipt.remaining, 9);
}

#[tokio::test]
async fn close_is_a_barrier_and_refuses_new_requests() {
    let coalescer = coalescer_with(&["hot"], 100, CoalescerConfig::default());
    let sku = SkuId::parse("hot").unwrap();
    let queued: Vec<_> = (0..20)
        .map(|_| {
            let coalescer = coalescer.clone();
            let sku = sku.clone();
            tokio::spawn(async move { coalescer.submit(sku, item(), far()).await })
        })
        .collect();
    tokio::task::yield_now().await;
    coalescer.close().await;
    assert_eq!(coalescer.queue_depth(), 0, "close returned with work queued");
    let refused = coalescer.submit(sku, item(), far()).await;
    assert!(matches!(
        refused,
        Err(DeductError::Unavailable {
            reason: "shutting down",
            ..
        })
    ));
    for task in queued {
        // Each was either applied before close returned or refused: never stranded.
        let answer = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("a request accepted before close was stranded")
            .unwrap();
        assert!(
            answer.is_ok() || matches!(answer, Err(DeductError::Unavailable { .. })),
            "{answer:?}"
        );
    }
}

#[tokio::test]
async fn a_deadline_while_queued_is_outcome_unknown_with_the_key() {
    let config = CoalescerConfig {
        max_in_flight_batches: 1,
        ..CoalescerConfig::default()
    };
    let coalescer = coalescer_with(&["hot"], 10, config);
    let held = coalescer.inner.in_flight.acquire().await.unwrap();
    let waiting = item();
    let key = waiting.idempotency_key.clone();
    let answer = coalescer
        .submit(
            SkuId::parse("hot").unwrap(),
            waiting,
            Instant::now() + Duration::from_millis(20),
        )
        .await;
    drop(held);
    match answer {
        Err(DeductError::OutcomeUnknown { idempotency_key, .. }) => {
            assert_eq!(idempotency_key, Some(key))
        }
        other => panic!("{other:?}"),
    }
}

/// Runs 200 concurrent requests on one SKU and returns the most batches that were applied at
/// once.
async fn most_batches_of_one_sku_at_once(max_batches_per_sku: usize) -> usize {
    let config = CoalescerConfig {
        max_batches_per_sku,
        ..CoalescerConfig::default()
    };
    let coalescer = coalescer_with(&["hot"], 1_000, config);
    let receipts = submit_concurrently(&coalescer, "hot", 200).await;
    let mut remaining: Vec<i64> = receipts.iter().map(|receipt| receipt.remaining).collect();
    // Every request applied exactly once: the stock left after each is distinct.
    remaining.sort_unstable();
    assert_eq!(remaining, (800..1_000).collect::<Vec<i64>>());
    assert_eq!(coalescer.queue_depth(), 0);
    assert_eq!(coalescer.inner.queues.active_keys(), 0, "a leader left dangling");
    coalescer.executor().most_in_flight.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_sku_keeps_its_next_batch_in_flight_up_to_the_limit() {
    assert_eq!(most_batches_of_one_sku_at_once(1).await, 1);
    // The model executor sleeps 1 ms per batch, so under 200 requests a second leader
    // always finds the first one's batch in flight.
    assert_eq!(most_batches_of_one_sku_at_once(2).await, 2);
    assert!(most_batches_of_one_sku_at_once(3).await <= 3);
}

#[test]
fn batches_per_sku_is_a_checked_limit() {
    for given in [0, BATCHES_PER_SKU_MAX + 1] {
        let config = CoalescerConfig {
            max_batches_per_sku: given,
            ..CoalescerConfig::default()
        };
        assert!(config.validate().is_err(), "{given} accepted");
    }
}
