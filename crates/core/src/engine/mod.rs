//! The deduction engine: the flow of every change, written once, over a [`Backend`].
//!
//! The engine owns validation, keys, idempotent replay, strategy dispatch, the retry policy
//! under one overall deadline, batch-of-one, the `Sharded` fallback, explaining a miss,
//! resolving a lost answer by its key, and classifying every outcome. An adapter supplies
//! only primitives (see [`Backend`]). `Engine<B>` implements [`InventoryStore`], which is
//! what the service and the harness hold.
//!
//! # The outcome contract
//! Every answer to a change is exactly one of:
//! - **committed**: `Ok(receipt)`. The change committed exactly once.
//! - **definitely not applied**: an error for which [`DeductError::nothing_changed`] holds.
//! - **outcome unknown**: [`DeductError::OutcomeUnknown`], carrying the key. It is answered
//!   only when a COMMIT (or an autocommit write) was sent and its answer was lost, and the
//!   engine could not look the key up within the deadline.
//!
//! To make that possible every change carries a key ([`IdempotencyKey::generate`] when the
//! caller sent none), claimed by the ledger row's unique index in the same transaction as the
//! change. After a lost answer the engine waits until no transaction holds the SKU's locks
//! and reads the key ([`Backend::settle_and_find`]): found means committed; absent means the
//! lost write aborted and cannot commit any more, so the engine runs the change again.

mod adjust;
mod backend;
mod batch;
mod batch_alone;
mod checkpoints;
mod config;
mod deduct;
mod fault;
mod hold;
mod incremental_audit;
mod land;
mod miss_facts;
mod order;
mod order_batch;
mod order_plan;
mod probe;
mod recent_keys;
mod stats;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use tracing::Instrument;

pub use backend::{
    AdjustWrite, AllLocked, Backend, Change, LineReason, LineWrite, LockWait, LockedRow, MissFacts,
    OrderClaim, PlannedLine, Step, StoredHold, StoredHoldRow, StoredMissFacts, StoredOrder, VersionedRow,
    Written,
};
pub use checkpoints::AuditCheckpoints;
pub use config::{DEADLINE_MAX, EngineConfig};
pub use fault::{ConnectRefusal, Fault, FaultKind, UNAVAILABLE_RETRY_AFTER, exhausted};
pub use recent_keys::RECENT_KEYS_MAX;
pub use stats::{EngineStats, ExpiredBy, POOL_WAIT_BUCKETS_US, PoolWaitStats, Resolution};

use crate::coalesce::{BatchItem, Coalescer, CoalescerConfig};
use crate::domain::{
    AdjustReceipt, AdjustRequest, AuditReport, Capabilities, ConfirmLines, DeductRequest, HoldId,
    HoldReceipt, HoldRequest, IdempotencyKey, IncrementalAuditReport, LedgerEntry, LedgerPage, OrderId,
    OrderReceipt, OrderRequest, OrderStrategy, PoolStatus, Receipt, RestockReceipt, RestockRequest, SkuId,
    SkuSnapshot, StockLevel, Strategy, check_committed_keys, check_stock_level,
};
use crate::error::{AttemptError, DeductError, InvalidInput};
use crate::store::InventoryStore;

/// A stockguard store: the engine over one backend. Cheap to clone.
pub struct Engine<B: Backend> {
    core: Arc<Core<B>>,
    coalescer: Coalescer<batch::BatchRunner<B>>,
    order_coalescer: Coalescer<order_batch::OrderBatchRunner<B>>,
}

impl<B: Backend> Clone for Engine<B> {
    fn clone(&self) -> Self {
        Self {
            core: Arc::clone(&self.core),
            coalescer: self.coalescer.clone(),
            order_coalescer: self.order_coalescer.clone(),
        }
    }
}

impl<B: Backend + std::fmt::Debug> std::fmt::Debug for Engine<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("backend", &self.core.backend)
            .field("config", &self.core.config)
            .finish()
    }
}

/// What the flows share: the backend, the settings and the counters.
pub(crate) struct Core<B> {
    backend: B,
    /// Read once: checked on every call, so it must not allocate per call.
    capabilities: Capabilities,
    /// Strategies the last probe found the server cannot honour (`probe.rs`).
    refusals: probe::Refusals,
    config: EngineConfig,
    stats: EngineStats,
    /// Client keys of deductions seen to commit, for answering retries (`recent_keys.rs`).
    recent_keys: recent_keys::RecentKeys,
    #[cfg(feature = "test-utils")]
    lost_answers: std::sync::Mutex<Vec<IdempotencyKey>>,
}

/// Whether a write that may commit has been sent and not yet settled, for the answer given
/// when the deadline cuts a call short.
#[derive(Debug, Default)]
pub(crate) struct Exposure(AtomicBool);

impl Exposure {
    fn sent(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn settled(&self) {
        self.0.store(false, Ordering::Release);
    }

    fn is_exposed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// One change in flight: what it is, where its key came from, and its deadline.
pub(crate) struct Call<'a> {
    change: Change<'a>,
    strategy: Strategy,
    client_key: bool,
    deadline: Instant,
    exposure: &'a Exposure,
    /// Where a refusal records that no due hold could change it (deductions the caller
    /// runs under `expiring_first`; `None` elsewhere).
    due_holds: Option<&'a hold::DueHolds>,
}

impl<B: Backend> Engine<B> {
    /// Opens the backend (failing fast if the server is unreachable). Does not migrate.
    pub async fn connect(config: B::Config) -> Result<Self, DeductError> {
        let engine_config = B::engine_config(&config);
        engine_config.validate()?;
        let backend = B::open(config).await?;
        Ok(Self::new(backend, engine_config))
    }

    /// The engine over an opened backend. `config` must be valid ([`EngineConfig::validate`]).
    pub fn new(backend: B, config: EngineConfig) -> Self {
        let core = Arc::new(Core {
            capabilities: backend.capabilities(),
            refusals: probe::Refusals::default(),
            backend,
            config,
            stats: EngineStats::default(),
            recent_keys: recent_keys::RecentKeys::new(config.recent_keys_max),
            #[cfg(feature = "test-utils")]
            lost_answers: std::sync::Mutex::new(Vec::new()),
        });
        let mut deductions = config.coalescer;
        if !core.capabilities.row_level_locking {
            // One writer at a time: a second batch of the SKU could not wait on a row lock,
            // only hold a connection while polling for the database's write lock.
            deductions.max_batches_per_sku = 1;
        }
        // An order batch locks every SKU of its orders; it stays one batch per queue until
        // two overlapping ones at once are measured (the hot single-SKU path is what pays).
        let orders = CoalescerConfig {
            max_batches_per_sku: 1,
            ..config.coalescer
        };
        let coalescer = Coalescer::new(batch::BatchRunner(Arc::clone(&core)), deductions);
        let order_coalescer = Coalescer::new(order_batch::OrderBatchRunner(Arc::clone(&core)), orders);
        Self {
            core,
            coalescer,
            order_coalescer,
        }
    }

    /// The adapter underneath (its pool, its flavour), for tests and tools.
    pub fn adapter(&self) -> &B {
        &self.core.backend
    }

    /// The settings in force.
    pub fn config(&self) -> EngineConfig {
        self.core.config
    }

    /// Applies the adapter's embedded migrations.
    pub async fn migrate(&self) -> Result<(), DeductError> {
        self.core.backend.migrate().await
    }

    /// The group-commit queue (for metrics).
    pub fn coalescer(&self) -> &Coalescer<impl crate::coalesce::BatchExecutor> {
        &self.coalescer
    }

    /// The group-commit queue of `Coalesced` orders (for metrics). It has the same limits as
    /// the deductions' queue, and its own in-flight bound.
    pub fn order_coalescer(&self) -> &Coalescer<impl crate::coalesce::BatchExecutor> {
        &self.order_coalescer
    }

    /// Retries, resolutions and `OutcomeUnknown` answers (for metrics).
    pub fn stats(&self) -> &EngineStats {
        &self.core.stats
    }

    /// How long calls waited for a pooled connection (for metrics).
    pub fn pool_wait(&self) -> &PoolWaitStats {
        self.core.backend.pool_wait()
    }

    /// Test support: the next write carrying `key` that commits is answered as if its
    /// connection broke right after COMMIT (the change stays committed), so that tests can
    /// drive resolution on every database, including embedded SQLite.
    #[cfg(feature = "test-utils")]
    pub fn lose_next_answer(&self, key: &IdempotencyKey) {
        self.core
            .lost_answers
            .lock()
            .expect("lost answers poisoned")
            .push(key.clone());
    }

    fn check_strategy(&self, strategy: Strategy) -> Result<(), DeductError> {
        if !self.core.capabilities.strategies.contains(&strategy) {
            return Err(InvalidInput::UnsupportedStrategy {
                strategy,
                backend: self.core.backend.name(),
            }
            .into());
        }
        match self.core.refusals.refused(strategy) {
            None => Ok(()),
            Some(refusal) => Err(InvalidInput::StrategyNotHonoured {
                strategy,
                backend: self.core.backend.name(),
                reason: refusal.to_string(),
            }
            .into()),
        }
    }
}

impl<B: Backend> Engine<B> {
    /// A deduction with its key settled (the client's, or a generated one), by `deadline`.
    async fn deduct_keyed(
        &self,
        request: DeductRequest,
        deadline: Instant,
        due_holds: &hold::DueHolds,
    ) -> Result<Receipt, DeductError> {
        let client_key = request.idempotency_key.is_some();
        let key = request.idempotency_key.unwrap_or_else(IdempotencyKey::generate);
        if request.strategy == Strategy::Coalesced && request.expected_version.is_none() {
            let item = BatchItem {
                quantity: request.quantity,
                idempotency_key: key,
                client_key,
            };
            return self.coalescer.submit(request.sku, item, deadline).await;
        }
        let exposure = Exposure::default();
        let call = Call {
            change: Change {
                sku: &request.sku,
                quantity: request.quantity,
                key: &key,
            },
            strategy: request.strategy,
            client_key,
            deadline,
            exposure: &exposure,
            due_holds: Some(due_holds),
        };
        let flow = async {
            match request.expected_version {
                Some(expected) => self.core.deduct_if_version(&call, expected).await,
                None => self.core.deduct(&call).await,
            }
        };
        match tokio::time::timeout_at(deadline.into(), flow).await {
            Ok(result) => result,
            Err(_) => Err(self.core.past_deadline(&exposure, Some(&key))),
        }
    }
}

impl<B: Backend> Core<B> {
    /// Runs `attempt` under the retry policy until `deadline`, counting retries.
    async fn run<T, F, Fut>(&self, deadline: Instant, attempt: F) -> Result<(T, u32), DeductError>
    where
        F: FnMut(u32) -> Fut,
        Fut: Future<Output = Result<T, AttemptError>>,
    {
        self.config
            .retry
            .run(deadline, |cause| self.stats.retried(cause), attempt)
            .await
    }

    /// A read, retried on faults that a fresh connection may cure.
    async fn read<T, F, Fut>(&self, read: F) -> Result<T, DeductError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, Fault>>,
    {
        let deadline = Instant::now() + self.config.deadline;
        let (value, _) = self
            .run(deadline, |_| async { read().await.map_err(Fault::definite) })
            .await?;
        Ok(value)
    }

    /// The answer when the deadline cuts a call short.
    fn past_deadline(&self, exposure: &Exposure, key: Option<&IdempotencyKey>) -> DeductError {
        self.stats.deadline_passed();
        if exposure.is_exposed() {
            DeductError::OutcomeUnknown {
                reason: "deadline passed while a write was in flight",
                idempotency_key: key.cloned(),
                retry_after: UNAVAILABLE_RETRY_AFTER,
                source: None,
            }
        } else {
            DeductError::Unavailable {
                reason: "deadline passed before anything that could commit was sent",
                retry_after: UNAVAILABLE_RETRY_AFTER,
                source: None,
            }
        }
    }

    /// Counts an `OutcomeUnknown` answer on its way out.
    fn counted<T>(&self, result: Result<T, DeductError>) -> Result<T, DeductError> {
        if let Err(DeductError::OutcomeUnknown { .. }) = &result {
            self.stats.answered_unknown();
        }
        result
    }
}

impl<B: Backend> InventoryStore for Engine<B> {
    fn backend(&self) -> &'static str {
        self.core.backend.name()
    }

    fn capabilities(&self) -> Capabilities {
        let mut capabilities = self.core.capabilities.clone();
        capabilities
            .strategies
            .retain(|strategy| self.core.refusals.refused(*strategy).is_none());
        capabilities
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        check_stock_level(initial_stock)?;
        self.core.create_sku(sku, initial_stock).await
    }

    async fn restock(&self, request: RestockRequest) -> Result<RestockReceipt, DeductError> {
        self.core.restock(request).await
    }

    async fn deduct(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        self.check_strategy(request.strategy)?;
        if let Some(key) = &request.idempotency_key
            && let Some(replayed) = self.core.recent_keys.replay(key, &request.sku, request.quantity)
        {
            self.core.stats.replayed_from_memory();
            return replayed;
        }
        let span = tracing::debug_span!(
            "deduct",
            sku = %request.sku,
            strategy = %request.strategy,
            outcome = tracing::field::Empty
        );
        // One deadline for the whole call. The clone is what lets a refusal expire due holds
        // and run the deduction again.
        let deadline = Instant::now() + self.core.config.deadline;
        let due_holds = hold::DueHolds::default();
        let deduction = |deadline| {
            self.deduct_keyed(request.clone(), deadline, &due_holds)
                .instrument(span.clone())
        };
        let result = self
            .core
            .expiring_first(Some(&request.sku), deadline, Some(&due_holds), deduction)
            .await;
        span.record(
            "outcome",
            result.as_ref().map_or_else(DeductError::kind, |_| "committed"),
        );
        if let Ok(receipt) = &result
            && request.idempotency_key.is_some()
        {
            self.core.recent_keys.remember(receipt);
        }
        self.core.counted(result)
    }

    async fn place_order(&self, order: OrderRequest) -> Result<OrderReceipt, DeductError> {
        let span = tracing::debug_span!(
            "order",
            order_id = %order.order_id(),
            lines = order.lines().len(),
            strategy = %order.strategy(),
            outcome = tracing::field::Empty
        );
        let deadline = Instant::now() + self.core.config.deadline;
        let skus: Vec<SkuId> = order.lines().iter().map(|(sku, _)| sku.clone()).collect();
        let placing = |deadline| {
            let (order, skus) = (&order, &skus);
            async move {
                if order.strategy() == OrderStrategy::Coalesced {
                    self.order_coalescer
                        .submit_any(skus, order.clone(), deadline)
                        .await
                } else {
                    self.core.place_order(order, deadline).await
                }
            }
            .instrument(span.clone())
        };
        let result = self.core.expiring_first(None, deadline, None, placing).await;
        span.record(
            "outcome",
            result.as_ref().map_or_else(DeductError::kind, |_| "committed"),
        );
        result
    }

    async fn adjust(&self, request: AdjustRequest) -> Result<AdjustReceipt, DeductError> {
        let deadline = Instant::now() + self.core.config.deadline;
        self.core
            .expiring_first(Some(&request.sku), deadline, None, |deadline| {
                self.core.adjust(&request, deadline)
            })
            .await
    }

    async fn reserve(&self, hold: HoldRequest) -> Result<HoldReceipt, DeductError> {
        let span = tracing::debug_span!("reserve", hold_id = %hold.hold_id(), lines = hold.lines().len());
        let deadline = Instant::now() + self.core.config.deadline;
        self.core
            .expiring_first(None, deadline, None, |deadline| {
                self.core.reserve(&hold, deadline).instrument(span.clone())
            })
            .await
    }

    async fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.core.hold(hold_id).await
    }

    async fn confirm_hold(&self, hold_id: &HoldId, lines: ConfirmLines) -> Result<HoldReceipt, DeductError> {
        self.core
            .resolve_hold(hold_id, hold::Resolve::Confirm(&lines))
            .await
    }

    async fn release_hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        self.core.resolve_hold(hold_id, hold::Resolve::Release).await
    }

    async fn sweep_holds(&self, batch: u32) -> Result<usize, DeductError> {
        self.core.expire_due(None, batch, ExpiredBy::Sweeper).await
    }

    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        self.core
            .read(|| self.core.backend.stock(sku))
            .await?
            .ok_or(DeductError::NotFound)
    }

    async fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        let rows = self.core.read(|| self.core.backend.ledger(sku, page)).await?;
        if rows.is_empty() {
            // Distinguish "no rows yet" from "no such SKU".
            self.stock(sku).await?;
        }
        Ok(rows)
    }

    async fn committed_keys(&self, keys: &[IdempotencyKey]) -> Result<Vec<IdempotencyKey>, DeductError> {
        check_committed_keys(keys.len())?;
        let refs: Vec<&IdempotencyKey> = keys.iter().collect();
        let rows = self.core.read(|| self.core.backend.find_keys(&refs)).await?;
        let keyed: HashSet<&str> = rows
            .iter()
            .filter_map(|row| row.idempotency_key.as_deref())
            .collect();
        let mut committed = Vec::new();
        for key in keys {
            if keyed.contains(key.as_str()) {
                committed.push(key.clone());
                continue;
            }
            // Order lines carry the order id as their reference, not as a key.
            let Ok(order_id) = OrderId::parse(key.as_str()) else {
                continue;
            };
            let order = self.core.read(|| self.core.backend.find_order(&order_id)).await?;
            if order.is_some() {
                committed.push(key.clone());
            }
        }
        Ok(committed)
    }

    async fn snapshot(&self) -> Result<Vec<SkuSnapshot>, DeductError> {
        self.core.read(|| self.core.backend.snapshot()).await
    }

    async fn audit(&self) -> Result<AuditReport, DeductError> {
        let mut report = AuditReport::from_snapshots(&self.snapshot().await?);
        report.discrepancies.extend(self.orphan_ledger().await?);
        let orders = self.core.read(|| self.core.backend.order_check()).await?;
        let holds = self.core.read(|| self.core.backend.hold_check()).await?;
        Ok(report.with_orders(orders).with_holds(holds))
    }

    async fn audit_incremental(&self) -> Result<IncrementalAuditReport, DeductError> {
        self.run_incremental_audit().await
    }

    async fn ping(&self) -> Result<(), DeductError> {
        // Once: readiness must report a broken database, not wait it out.
        self.core.backend.ping().await.map_err(Fault::into_error)
    }

    fn pool_status(&self) -> PoolStatus {
        self.core.backend.pool_status()
    }

    async fn close(&self) {
        self.coalescer.close().await;
        self.order_coalescer.close().await;
        self.core.backend.close().await;
    }
}
