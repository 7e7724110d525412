//! Group commit for hot SKUs.
//!
//! Concurrent deductions of one SKU join a per-SKU queue. The first arrival spawns a leader
//! task that repeatedly takes up to `max_batch_size` queued requests and hands them to the
//! adapter's [`BatchExecutor`], which applies the whole batch in one transaction: one row
//! lock, one stock update, one multi-row ledger insert, one commit. While a batch is in
//! flight, new arrivals queue, so batches grow with load and stay at 1 when idle.
//!
//! Pipelining: a SKU may have up to `max_batches_per_sku` leaders. Once
//! [`ANOTHER_LEADER_MIN_QUEUED`] requests wait for a SKU that has fewer, an arrival spawns
//! another, which opens its transaction at once; in the database it waits on the row lock
//! until the previous batch commits, so the hot row is handed straight on instead of idling
//! through the next batch's first round trips. Such a leader's executor may take its batch
//! late ([`BatchExecutor::execute_taking`]): the engine takes it only once its transaction
//! holds the SKU's row lock, so every request that arrived meanwhile joins it. A SKU's only
//! leader takes its batch at once.
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore, oneshot};

pub use plan::{BatchItem, BatchPlan, NewLedgerRow};
use queue::{HandoffQueues, Pushed};

use crate::domain::{IdempotencyKey, SkuId};
use crate::error::{DeductError, InvalidInput};

/// A queued request, as the coalescer needs to see it.
pub trait Batched: Send + Sync + 'static {
    /// The key that resolves the request's outcome when its caller's deadline passes while
    /// its batch may be committing.
    fn outcome_key(&self) -> IdempotencyKey;
}

impl Batched for BatchItem {
    fn outcome_key(&self) -> IdempotencyKey {
        self.idempotency_key.clone()
    }
}

/// Applies one SKU's batch in one transaction. The engine implements it over a backend: for
/// single deductions (`BatchItem` → `Receipt`) and for orders.
pub trait BatchExecutor: Send + Sync + 'static {
    /// One queued request.
    type Item: Batched;
    /// A request's answer when it committed.
    type Receipt: Send + 'static;

    /// Applies `items` (the requests queued under `sku`, FIFO) and returns one result per
    /// item, in order. A failure that hits the whole batch is every item's result; an item is
    /// answered `Ok` only once its writes committed.
    fn execute_batch(
        &self,
        sku: &SkuId,
        items: &[Self::Item],
    ) -> impl Future<Output = Vec<Result<Self::Receipt, DeductError>>> + Send;

    /// Applies the batch `source` yields and returns one result per item it took, in order.
    /// The executor decides when to take it: the later, the more requests join. The default
    /// takes it at once and runs [`BatchExecutor::execute_batch`].
    fn execute_taking(
        &self,
        sku: &SkuId,
        source: &BatchSource<'_, Self>,
    ) -> impl Future<Output = Vec<Result<Self::Receipt, DeductError>>> + Send
    where
        Self: Sized,
    {
        async move { self.execute_batch(sku, source.take()).await }
    }

    /// Adds the time a request waited in the queue to its receipt, where the receipt reports
    /// waiting.
    fn add_queue_wait(receipt: &mut Self::Receipt, queued_us: u64) {
        let _ = (receipt, queued_us);
    }
}

/// Explicit limits for group commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CoalescerConfig {
    /// Most requests one transaction applies.
    pub max_batch_size: usize,
    /// Most requests waiting per SKU; beyond it `deduct` fails fast with `Unavailable`.
    pub max_queue_depth: usize,
    /// Most requests waiting over all SKUs together; beyond it `deduct` fails fast with
    /// `Unavailable`. Bounds memory however many SKUs are hot at once.
    pub max_total_queued: usize,
    /// Most batches applied at once over all SKUs: each holds a pooled connection, so this
    /// bounds the connections group commit takes (keep it below the pool size: a batch with
    /// client keys looks them up on a second connection while it holds the row lock). A
    /// leader waits for a slot while its queue keeps filling.
    pub max_in_flight_batches: usize,
    /// Most batches of one SKU applied at once, each by its own leader (see the module's
    /// "Pipelining"). 1 applies a SKU's batches strictly one after another. The engine uses
    /// 1 where the database admits one writer at a time (SQLite), as a second batch would
    /// only hold a connection while polling for the write lock.
    pub max_batches_per_sku: usize,
    /// How long a leader lingers before taking a batch, to let it fill. Zero (the default)
    /// relies on natural batching: requests that arrive during a commit form the next batch.
    pub max_wait: Duration,
}

/// Largest accepted `max_batch_size`.
pub const BATCH_SIZE_MAX: usize = 10_000;
/// Largest accepted queue bound (per SKU or in total).
pub const QUEUE_DEPTH_MAX: usize = 10_000_000;
/// Largest accepted `max_in_flight_batches`.
pub const IN_FLIGHT_BATCHES_MAX: usize = 10_000;
/// Largest accepted `max_batches_per_sku`: beyond a few, batches only queue on the row lock
/// holding connections.
pub const BATCHES_PER_SKU_MAX: usize = 16;
/// A SKU gets another leader only once this many requests wait for it. Below it, a second
/// batch would often be of one or two and turn what were single guarded writes into locked
/// transactions queued on the row (16 SKUs × 64 requesters: 0.6× the ok/s of one leader);
/// a hot SKU's queue passes it within a commit.
pub const ANOTHER_LEADER_MIN_QUEUED: usize = 8;
/// Largest accepted `max_wait`.
pub const MAX_WAIT_MAX: Duration = Duration::from_secs(1);

impl Default for CoalescerConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 128,
            max_queue_depth: 10_000,
            max_total_queued: 100_000,
            max_in_flight_batches: 8,
            max_batches_per_sku: 2,
            max_wait: Duration::ZERO,
        }
    }
}

impl CoalescerConfig {
    /// Checks every limit.
    pub fn validate(&self) -> Result<(), InvalidInput> {
        let check = |setting: &'static str, given: usize, max: usize| {
            if (1..=max).contains(&given) {
                Ok(())
            } else {
                Err(InvalidInput::LimitOutOfRange {
                    setting,
                    given: given as u64,
                    min: 1,
                    max: max as u64,
                })
            }
        };
        check("max_batch_size", self.max_batch_size, BATCH_SIZE_MAX)?;
        check("max_queue_depth", self.max_queue_depth, QUEUE_DEPTH_MAX)?;
        check("max_total_queued", self.max_total_queued, QUEUE_DEPTH_MAX)?;
        check(
            "max_in_flight_batches",
            self.max_in_flight_batches,
            IN_FLIGHT_BATCHES_MAX,
        )?;
        check(
            "max_batches_per_sku",
            self.max_batches_per_sku,
            BATCHES_PER_SKU_MAX,
        )?;
        if self.max_wait > MAX_WAIT_MAX {
            return Err(InvalidInput::LimitOutOfRange {
                setting: "max_wait_us",
                given: u64::try_from(self.max_wait.as_micros()).unwrap_or(u64::MAX),
                min: 0,
                max: u64::try_from(MAX_WAIT_MAX.as_micros()).unwrap_or(u64::MAX),
            });
        }
        Ok(())
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
    /// Requests refused because their SKU's queue, or all queues, were full.
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

/// A leader's next batch, taken from its SKU's queue when the executor first asks for it.
pub struct BatchSource<'a, E: BatchExecutor> {
    inner: &'a Inner<E>,
    sku: &'a SkuId,
    taken: OnceLock<Taken<E>>,
}

/// Where one request's answer goes.
type Reply<E> = oneshot::Sender<Result<<E as BatchExecutor>::Receipt, DeductError>>;

/// What a leader took: the live requests, and where and since when each one's answer waits.
struct Taken<E: BatchExecutor> {
    items: Vec<E::Item>,
    replies: Vec<(Reply<E>, Instant)>,
    taken_at: Instant,
}

impl<E: BatchExecutor> std::fmt::Debug for BatchSource<'_, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchSource")
            .field("sku", self.sku)
            .field("taken", &self.taken.get().map(|taken| taken.items.len()))
            .finish()
    }
}

impl<E: BatchExecutor> BatchSource<'_, E> {
    /// The batch: on the first call, up to `max_batch_size` requests queued now, FIFO, less
    /// those whose callers have gone; every later call returns the same items (a retried
    /// attempt applies the batch it took). Empty when another leader of the SKU took them.
    pub fn take(&self) -> &[E::Item] {
        let taken = self.taken.get_or_init(|| {
            let inner = self.inner;
            let batch = inner
                .queues
                .take_batch_keeping_lead(self.sku, inner.config.max_batch_size);
            let queued = batch.len();
            let mut items = Vec::with_capacity(queued);
            let mut replies = Vec::with_capacity(queued);
            for waiter in batch {
                if waiter.reply.is_closed() {
                    continue;
                }
                items.push(waiter.item);
                replies.push((waiter.reply, waiter.enqueued));
            }
            if items.len() < queued {
                inner
                    .stats
                    .cancelled_before_batch
                    .fetch_add((queued - items.len()) as u64, Ordering::Relaxed);
            }
            if !items.is_empty() {
                inner.stats.record_batch(items.len());
            }
            Taken {
                items,
                replies,
                taken_at: Instant::now(),
            }
        });
        &taken.items
    }

    /// True when this is the SKU's only leader: no batch of the SKU is committing ahead of
    /// this one, so waiting for the lock would add no request, and the executor may take the
    /// batch at once.
    pub fn sole_leader(&self) -> bool {
        self.inner.queues.leaders(self.sku) <= 1
    }
}

struct Waiter<E: BatchExecutor> {
    item: E::Item,
    reply: Reply<E>,
    enqueued: Instant,
}

struct Inner<E: BatchExecutor> {
    executor: E,
    config: CoalescerConfig,
    queues: HandoffQueues<SkuId, Waiter<E>>,
    in_flight: Semaphore,
    leaders_done: Notify,
    stats: CoalescerStats,
}

/// Group commit over a [`BatchExecutor`]. Cheap to clone.
pub struct Coalescer<E: BatchExecutor> {
    inner: Arc<Inner<E>>,
}

impl<E: BatchExecutor> Clone for Coalescer<E> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<E: BatchExecutor> std::fmt::Debug for Coalescer<E> {
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
                queues: HandoffQueues::new(
                    config.max_queue_depth,
                    config.max_total_queued,
                    config.max_batches_per_sku,
                    ANOTHER_LEADER_MIN_QUEUED,
                ),
                in_flight: Semaphore::new(config.max_in_flight_batches.max(1)),
                config,
                leaders_done: Notify::new(),
                stats: CoalescerStats::default(),
            }),
        }
    }

    /// The executor.
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

    /// Queues `item` for `sku` and waits, until `deadline`, for its batch to commit.
    ///
    /// Past the deadline the answer is `OutcomeUnknown` with the item's key: the item may be
    /// in a batch that is committing. (A caller gone while its item is still queued is
    /// skipped, so nothing is applied for it; the key says which happened.)
    pub async fn submit(
        &self,
        sku: SkuId,
        item: E::Item,
        deadline: Instant,
    ) -> Result<E::Receipt, DeductError> {
        self.submit_any(std::slice::from_ref(&sku), item, deadline).await
    }

    /// As [`Coalescer::submit`], for a request touching every SKU in `skus` (at least one):
    /// it joins the longest batch forming on any of them, or leads one on `skus[0]` (see
    /// [`HandoffQueues::push_any`]). The batch's transaction covers all of the request's SKUs
    /// whichever queue carried it; the choice only decides which requests share a commit.
    pub async fn submit_any(
        &self,
        skus: &[SkuId],
        item: E::Item,
        deadline: Instant,
    ) -> Result<E::Receipt, DeductError> {
        let key = item.outcome_key();
        let (reply, answer) = oneshot::channel();
        let waiter = Waiter {
            item,
            reply,
            enqueued: Instant::now(),
        };
        match self.inner.queues.push_any(skus, waiter) {
            (chosen, Pushed::Lead) => {
                tokio::spawn(lead(Arc::clone(&self.inner), skus[chosen].clone()));
            }
            (_, Pushed::Joined) => {}
            (_, Pushed::Full(_)) => {
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
            (_, Pushed::Closed(_)) => {
                return Err(DeductError::Unavailable {
                    reason: "shutting down",
                    retry_after: Duration::from_secs(1),
                    source: None,
                });
            }
        }
        match tokio::time::timeout_at(deadline.into(), answer).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DeductError::Internal {
                context: "coalescer leader ended without replying",
                source: None,
            }),
            Err(_) => Err(DeductError::OutcomeUnknown {
                reason: "deadline passed while the request was queued or its batch was committing",
                idempotency_key: Some(key),
                retry_after: Duration::from_secs(1),
                source: None,
            }),
        }
    }

    /// Refuses new requests, then waits until every queued batch has been applied. Once it
    /// returns, nothing is queued and nothing ever will be: a barrier.
    pub async fn close(&self) {
        self.inner.queues.close();
        loop {
            let notified = self.inner.leaders_done.notified();
            if self.inner.queues.is_idle() {
                return;
            }
            notified.await;
        }
    }
}

/// Ends leadership even if the executor panics: queued waiters are failed rather than
/// stranded behind a leader flag nobody will clear.
struct LeaderGuard<E: BatchExecutor> {
    inner: Arc<Inner<E>>,
    sku: SkuId,
    /// Set when the leader saw its queue empty, which ended its leadership.
    finished: bool,
}

impl<E: BatchExecutor> Drop for LeaderGuard<E> {
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
        self.inner.leaders_done.notify_waiters();
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
        // A slot first: while this leader waits for one, its queue keeps filling.
        let permit = inner
            .in_flight
            .acquire()
            .await
            .expect("the in-flight semaphore is never closed");
        if !inner.queues.keep_leading(&sku) {
            guard.finished = true;
            break;
        }
        let source = BatchSource {
            inner: &inner,
            sku: &sku,
            taken: OnceLock::new(),
        };
        let results = inner.executor.execute_taking(&sku, &source).await;
        drop(permit);
        let Some(taken) = source.taken.into_inner() else {
            assert!(results.is_empty(), "an executor answered items it never took");
            continue;
        };
        assert_eq!(
            results.len(),
            taken.replies.len(),
            "executor must answer every item"
        );
        for ((reply, enqueued), result) in taken.replies.into_iter().zip(results) {
            let queued_us = micros(taken.taken_at.duration_since(enqueued));
            let result = result.map(|mut receipt| {
                E::add_queue_wait(&mut receipt, queued_us);
                receipt
            });
            let _ = reply.send(result);
        }
    }
    drop(guard);
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests;
