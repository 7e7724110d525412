//! Group commit for hot SKUs.
//!
//! Concurrent deductions of one SKU join a per-SKU queue. The first arrival spawns a leader
//! task that repeatedly takes up to `max_batch_size` queued requests and hands them to the
//! adapter's [`BatchExecutor`], which applies the whole batch in one transaction: one row
//! lock, one stock update, one multi-row ledger insert, one commit. While a batch is in
//! flight, new arrivals queue, so batches grow with load and stay at 1 when idle.
//!
//! Cancellation: a caller whose future is dropped while its request is still queued is
//! skipped when the leader takes the batch, so it is never applied. Once the batch is taken
//! the request will be applied and committed (or fail with the batch) even if nobody awaits
//! the reply. A caller that must know the outcome after cancelling retries with the same
//! idempotency key and gets either the committed receipt or a fresh deduction, never two.
//!
//! Several processes may coalesce the same SKU at once: their batches serialise on the
//! database row lock like any two transactions.

mod plan;
pub mod queue;
mod sync;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

pub use plan::{BatchItem, BatchPlan, NewLedgerRow, single_item_outcome};
use queue::{HandoffQueues, Pushed};

use crate::domain::{DeductRequest, Receipt, SkuId};
use crate::error::{AttemptError, DeductError};
use crate::retry::RetryPolicy;

/// Applies one SKU's batch in one transaction. Implemented by each adapter.
pub trait BatchExecutor: Send + Sync + 'static {
    /// Locks the SKU's row, plans `items` with [`BatchPlan`], writes the stock and one ledger
    /// row per applied item, and commits. Returns one result per item, in order, or an
    /// error that fails every item (nothing committed). `Retry` errors rerun the whole batch.
    fn execute_batch(
        &self,
        sku: &SkuId,
        items: &[BatchItem],
    ) -> impl Future<Output = Result<Vec<Result<Receipt, DeductError>>, AttemptError>> + Send;
}

/// Explicit limits for group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescerConfig {
    /// Most requests one transaction applies.
    pub max_batch_size: usize,
    /// Most requests waiting per SKU; beyond it `deduct` fails fast with `Unavailable`.
    pub max_queue_depth: usize,
    /// How long a leader lingers before taking a batch, to let it fill. Zero (the default)
    /// relies on natural batching: requests that arrive during a commit form the next batch.
    pub max_wait: Duration,
    /// Retries of a whole batch on deadlock or serialization failure.
    pub retry: RetryPolicy,
}

impl Default for CoalescerConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 128,
            max_queue_depth: 10_000,
            max_wait: Duration::ZERO,
            retry: RetryPolicy::default(),
        }
    }
}

/// Upper bounds of the batch-size histogram buckets (the last bucket is +Inf).
pub const BATCH_SIZE_BUCKETS: [u64; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct CoalescerStats {
    /// Batches committed or failed.
    pub batches: AtomicU64,
    /// Requests carried by those batches.
    pub batched_requests: AtomicU64,
    /// Queued requests skipped because their caller had gone.
    pub cancelled_before_batch: AtomicU64,
    /// Requests refused because their SKU's queue was full.
    pub rejected_queue_full: AtomicU64,
    /// Cumulative batch-size histogram: `batch_size_buckets[i]` counts batches of size ≤
    /// `BATCH_SIZE_BUCKETS[i]`; the last slot counts all.
    pub batch_size_buckets: [AtomicU64; BATCH_SIZE_BUCKETS.len() + 1],
}

impl CoalescerStats {
    fn record_batch(&self, size: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.batched_requests.fetch_add(size as u64, Ordering::Relaxed);
        for (bound, bucket) in BATCH_SIZE_BUCKETS.iter().zip(&self.batch_size_buckets) {
            if size as u64 <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.batch_size_buckets[BATCH_SIZE_BUCKETS.len()].fetch_add(1, Ordering::Relaxed);
    }
}

struct Waiter {
    item: BatchItem,
    reply: oneshot::Sender<Result<Receipt, DeductError>>,
    enqueued: Instant,
}

struct Inner<E> {
    executor: E,
    config: CoalescerConfig,
    queues: HandoffQueues<SkuId, Waiter>,
    closed: AtomicBool,
    leaders: AtomicUsize,
    leaders_done: Notify,
    stats: CoalescerStats,
}

/// Group commit over a [`BatchExecutor`]. Cheap to clone.
pub struct Coalescer<E> {
    inner: Arc<Inner<E>>,
}

impl<E> Clone for Coalescer<E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E> std::fmt::Debug for Coalescer<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coalescer")
            .field("config", &self.inner.config)
            .field("queued", &self.inner.queues.total_depth())
            .finish()
    }
}

impl<E: BatchExecutor> Coalescer<E> {
    /// A coalescer applying batches through `executor`.
    pub fn new(executor: E, config: CoalescerConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                executor,
                queues: HandoffQueues::new(config.max_queue_depth),
                config,
                closed: AtomicBool::new(false),
                leaders: AtomicUsize::new(0),
                leaders_done: Notify::new(),
                stats: CoalescerStats::default(),
            }),
        }
    }

    /// The executor (the adapter's shared state).
    pub fn executor(&self) -> &E {
        &self.inner.executor
    }

    /// The limits in force.
    pub fn config(&self) -> CoalescerConfig {
        self.inner.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &CoalescerStats {
        &self.inner.stats
    }

    /// Requests queued right now, over all SKUs.
    pub fn queue_depth(&self) -> usize {
        self.inner.queues.total_depth()
    }

    /// Queues `request` and waits for its batch to commit.
    pub async fn submit(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(DeductError::Unavailable {
                reason: "shutting down",
                retry_after: Duration::from_secs(1),
                source: None,
            });
        }
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            item: BatchItem {
                quantity: request.quantity,
                idempotency_key: request.idempotency_key,
            },
            reply,
            enqueued: Instant::now(),
        };
        match self.inner.queues.push(&request.sku, waiter) {
            Pushed::Lead => {
                self.inner.leaders.fetch_add(1, Ordering::AcqRel);
                tokio::spawn(lead(Arc::clone(&self.inner), request.sku));
            }
            Pushed::Joined => {}
            Pushed::Full(_) => {
                self.inner
                    .stats
                    .rejected_queue_full
                    .fetch_add(1, Ordering::Relaxed);
                return Err(DeductError::Unavailable {
                    reason: "coalescing queue full",
                    retry_after: Duration::from_millis(50),
                    source: None,
                });
            }
        }
        answer.await.unwrap_or_else(|_| {
            Err(DeductError::Internal {
                context: "coalescer leader ended without replying",
                source: None,
            })
        })
    }

    /// Refuses new requests and waits until every queued batch has been applied.
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        loop {
            let notified = self.inner.leaders_done.notified();
            if self.inner.leaders.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// Ends leadership even if the executor panics: queued waiters are failed rather than
/// stranded behind a leader flag nobody will clear.
struct LeaderGuard<E> {
    inner: Arc<Inner<E>>,
    sku: SkuId,
    /// Set when the leader saw its queue empty, which ended its leadership.
    finished: bool,
}

impl<E> Drop for LeaderGuard<E> {
    fn drop(&mut self) {
        // After a normal exit leadership already ended inside `take_batch`, and the key may
        // have a new leader by now whose queue is not ours to touch. Only a panic in the
        // executor (tokio drops the task's future after catching it) leaves it open.
        while !self.finished
            && let Some(batch) = self.inner.queues.take_batch(&self.sku, usize::MAX)
        {
            for waiter in batch {
                let _ = waiter.reply.send(Err(DeductError::Internal {
                    context: "coalescer leader failed",
                    source: None,
                }));
            }
        }
        if self.inner.leaders.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.inner.leaders_done.notify_waiters();
        }
    }
}

async fn lead<E: BatchExecutor>(inner: Arc<Inner<E>>, sku: SkuId) {
    let mut guard = LeaderGuard {
        inner: Arc::clone(&inner),
        sku: sku.clone(),
        finished: false,
    };
    loop {
        if !inner.config.max_wait.is_zero() && inner.queues.depth(&sku) < inner.config.max_batch_size {
            tokio::time::sleep(inner.config.max_wait).await;
        }
        let Some(batch) = inner.queues.take_batch(&sku, inner.config.max_batch_size) else {
            guard.finished = true;
            break;
        };
        let (live, cancelled): (Vec<Waiter>, Vec<Waiter>) =
            batch.into_iter().partition(|w| !w.reply.is_closed());
        if !cancelled.is_empty() {
            inner
                .stats
                .cancelled_before_batch
                .fetch_add(cancelled.len() as u64, Ordering::Relaxed);
        }
        if live.is_empty() {
            continue;
        }
        let items: Vec<BatchItem> = live.iter().map(|w| w.item.clone()).collect();
        inner.stats.record_batch(items.len());
        let taken_at = Instant::now();
        let outcome = inner
            .config
            .retry
            .run(|_| inner.executor.execute_batch(&sku, &items))
            .await;
        match outcome {
            Ok((results, attempts)) => {
                assert_eq!(results.len(), live.len(), "executor must answer every item");
                for (waiter, result) in live.into_iter().zip(results) {
                    let queued_us = micros(taken_at.duration_since(waiter.enqueued));
                    let result = result.map(|mut receipt| {
                        receipt.attempts = attempts;
                        receipt.lock_wait_us += queued_us;
                        receipt
                    });
                    let _ = waiter.reply.send(result);
                }
            }
            Err(error) => {
                for waiter in live {
                    let _ = waiter.reply.send(Err(error.duplicate()));
                }
            }
        }
    }
    drop(guard);
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;
    use crate::{Quantity, Strategy};

    /// An in-process executor over the reference model: enough to exercise the queue and the
    /// leader (adapters are tested against real databases by the conformance suite).
    struct ModelExecutor {
        model: std::sync::Mutex<crate::model::ReferenceModel>,
        panic_next: AtomicBool,
        batches: AtomicUsize,
    }

    impl BatchExecutor for ModelExecutor {
        async fn execute_batch(
            &self,
            sku: &SkuId,
            items: &[BatchItem],
        ) -> Result<Vec<Result<Receipt, DeductError>>, AttemptError> {
            tokio::task::yield_now().await;
            assert!(
                !self.panic_next.swap(false, Ordering::SeqCst),
                "injected executor panic"
            );
            self.batches.fetch_add(1, Ordering::SeqCst);
            let mut model = self.model.lock().unwrap();
            Ok(items
                .iter()
                .map(|item| {
                    model.deduct(&DeductRequest {
                        sku: sku.clone(),
                        quantity: item.quantity,
                        idempotency_key: item.idempotency_key.clone(),
                        strategy: Strategy::Coalesced,
                    })
                })
                .collect())
        }
    }

    fn coalescer(stock: i64) -> (Coalescer<ModelExecutor>, SkuId) {
        let sku = SkuId::parse("hot").unwrap();
        let mut model = crate::model::ReferenceModel::new();
        model.create_sku(&sku, stock).unwrap();
        let executor = ModelExecutor {
            model: std::sync::Mutex::new(model),
            panic_next: AtomicBool::new(false),
            batches: AtomicUsize::new(0),
        };
        (Coalescer::new(executor, CoalescerConfig::default()), sku)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_batches_and_all_get_answers() {
        let (coalescer, sku) = coalescer(1_000);
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let coalescer = coalescer.clone();
                let sku = sku.clone();
                tokio::spawn(async move {
                    coalescer
                        .submit(DeductRequest::new(
                            sku,
                            Quantity::new(1).unwrap(),
                            Strategy::Coalesced,
                        ))
                        .await
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let batches = coalescer.executor().batches.load(Ordering::SeqCst);
        assert!(batches < 200, "200 concurrent requests took {batches} batches");
        assert_eq!(coalescer.stats().batched_requests.load(Ordering::Relaxed), 200);
        assert_eq!(coalescer.queue_depth(), 0);
    }

    #[tokio::test]
    async fn an_executor_panic_fails_its_batch_and_releases_leadership() {
        let (coalescer, sku) = coalescer(10);
        coalescer.executor().panic_next.store(true, Ordering::SeqCst);
        let request = DeductRequest::new(sku, Quantity::new(1).unwrap(), Strategy::Coalesced);
        let failed = coalescer.submit(request.clone()).await;
        assert!(matches!(failed, Err(DeductError::Internal { .. })), "{failed:?}");
        // A stranded leader flag would park this request forever.
        let receipt = tokio::time::timeout(Duration::from_secs(10), coalescer.submit(request))
            .await
            .expect("leadership was not released after the panic")
            .expect("a new leader takes over");
        assert_eq!(receipt.remaining, 9);
    }

    #[tokio::test]
    async fn close_refuses_new_requests() {
        let (coalescer, sku) = coalescer(10);
        coalescer.close().await;
        let refused = coalescer
            .submit(DeductRequest::new(
                sku,
                Quantity::new(1).unwrap(),
                Strategy::Coalesced,
            ))
            .await;
        assert!(matches!(
            refused,
            Err(DeductError::Unavailable {
                reason: "shutting down",
                ..
            })
        ));
    }
}
