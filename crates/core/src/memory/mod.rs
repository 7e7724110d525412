//! An in-memory [`Backend`]: the engine without a database, for micro-benchmarks and tests.
//!
//! It stores rows as a database would (SKUs, the ledger with its unique keys, orders, holds)
//! and nothing more: the engine owns the flow. Like SQLite it admits one writer at a time: a
//! transaction holds the one write lock from [`Backend::begin`] to its end, keeps its writes
//! in a working copy and applies them on commit, so a rollback or a dropped transaction
//! leaves nothing behind. Reads never wait for the writer and see only committed rows.
//!
//! No answer is ever lost (there is no connection), so `settle_and_find` only waits out the
//! writer. Not `Sharded`: with one writer there is nothing to spread.

mod checkpoints;
mod tables;
mod tx;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

pub use tx::MemoryTx;

use self::tables::Tables;
use self::tx::{NewRow, committed};
use crate::coalesce::BatchPlan;
use crate::domain::{
    Capabilities, HoldCheck, HoldId, HoldState, IdempotencyKey, LedgerEntry, LedgerPage, LedgerReason,
    LockFeature, OrderCheck, OrderId, PoolStatus, ServerProbe, SkuId, SkuSnapshot, StockLevel, Strategy,
};
use crate::engine::{
    AdjustWrite, Backend, Change, Engine, EngineConfig, Fault, FaultKind, LineWrite, LockWait, LockedRow,
    MissFacts, PoolWaitStats, Step, StoredHold, StoredOrder, VersionedRow, Written,
};
use crate::error::DeductError;

/// A stockguard store held in memory: the engine over [`MemoryBackend`].
pub type MemoryStore = Engine<MemoryBackend>;

/// Settings of a [`MemoryBackend`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryConfig {
    /// The engine's settings.
    pub engine: EngineConfig,
    /// How long [`LockWait::Wait`] waits for the write lock before `LockTimeout` (SQLite's
    /// busy timeout).
    pub lock_timeout: Duration,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            engine: EngineConfig::default(),
            lock_timeout: Duration::from_secs(5),
        }
    }
}

/// The rows of one in-memory database, and its one write lock.
#[derive(Debug)]
pub struct MemoryBackend {
    tables: Arc<Mutex<Tables>>,
    /// Held by the open transaction, if any: one writer at a time.
    write: Arc<tokio::sync::Mutex<()>>,
    config: MemoryConfig,
    pool_wait: PoolWaitStats,
    /// What [`Backend::probe`] answers instead of the truth (see [`MemoryBackend::answer_probes_with`]).
    probe_answer: Mutex<Option<ServerProbe>>,
}

impl MemoryBackend {
    /// An empty database.
    pub fn new(config: MemoryConfig) -> Self {
        Self {
            tables: Arc::default(),
            write: Arc::new(tokio::sync::Mutex::new(())),
            config,
            pool_wait: PoolWaitStats::default(),
            probe_answer: Mutex::new(None),
        }
    }

    /// Makes [`Backend::probe`] report `probe`, as a server that really behaved so would:
    /// how the engine's refusals are tested without such a server.
    pub fn answer_probes_with(&self, probe: ServerProbe) {
        *self
            .probe_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(probe);
    }

    async fn begin_tx(&self, wait: LockWait) -> Result<MemoryTx, Fault> {
        let lock = Arc::clone(&self.write);
        let guard = match wait {
            LockWait::NoWait => lock
                .try_lock_owned()
                .map_err(|_| Fault::bare(FaultKind::LockTimeout, "taking the write lock"))?,
            LockWait::Wait => tokio::time::timeout(self.config.lock_timeout, lock.lock_owned())
                .await
                .map_err(|_| Fault::bare(FaultKind::LockTimeout, "taking the write lock"))?,
        };
        Ok(MemoryTx::new(Arc::clone(&self.tables), guard))
    }

    /// Runs `body` in its own transaction, committing only a `Some`.
    async fn self_contained<T>(
        &self,
        body: impl FnOnce(&mut MemoryTx) -> Result<Option<T>, Fault>,
    ) -> Result<Option<T>, Fault> {
        let mut tx = self.begin_tx(LockWait::Wait).await?;
        let outcome = body(&mut tx)?;
        if outcome.is_some() {
            tx.commit();
        }
        Ok(outcome)
    }

    /// A plain read: done at once, under the committed rows' lock (no await inside).
    fn read<T>(&self, body: impl FnOnce(&Tables) -> T) -> std::future::Ready<Result<T, Fault>> {
        std::future::ready(Ok(body(&committed(&self.tables))))
    }
}

fn deduct_row<'a>(change: Change<'a>, stock_after: i64) -> NewRow<'a> {
    NewRow {
        sku: change.sku,
        delta: -change.quantity.get(),
        stock_after,
        reason: LedgerReason::Deduct,
        key: Some(change.key.as_str()),
        reference: None,
        adjustment: None,
    }
}

fn line_row<'a>(line: LineWrite<'a>, stock_after: i64) -> NewRow<'a> {
    NewRow {
        sku: line.sku,
        delta: line.stock_delta(),
        stock_after,
        reason: line.reason.ledger_reason(),
        key: None,
        reference: Some(line.reference),
        adjustment: None,
    }
}

impl Backend for MemoryBackend {
    type Config = MemoryConfig;
    type Tx = MemoryTx;

    async fn open(config: MemoryConfig) -> Result<Self, DeductError> {
        Ok(Self::new(config))
    }

    fn engine_config(config: &MemoryConfig) -> EngineConfig {
        config.engine
    }

    async fn migrate(&self) -> Result<(), DeductError> {
        Ok(())
    }

    fn name(&self) -> &'static str {
        "memory"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            // Not `Sharded`: one writer at a time, so there is nothing to spread.
            strategies: Strategy::ALL
                .into_iter()
                .filter(|s| *s != Strategy::Sharded)
                .collect(),
            row_level_locking: false,
        }
    }

    async fn probe(&self) -> Result<ServerProbe, DeductError> {
        let answer = self
            .probe_answer
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        Ok(answer.unwrap_or_else(|| {
            ServerProbe::without_row_locks("stockguard memory", env!("CARGO_PKG_VERSION").to_owned())
        }))
    }

    fn lock_features(&self, strategy: Strategy) -> &'static [LockFeature] {
        // One writer at a time, so no clause is written; `NoWait` is the write lock's
        // `try_lock`, named as the SQL adapters name it so a faked probe can refuse it.
        match strategy {
            Strategy::NoWait => &[LockFeature::NoWait],
            _ => &[],
        }
    }

    fn pool_status(&self) -> PoolStatus {
        PoolStatus {
            size: 1,
            idle: u32::from(self.write.try_lock().is_ok()),
            max_size: 1,
        }
    }

    fn pool_wait(&self) -> &PoolWaitStats {
        &self.pool_wait
    }

    async fn close(&self) {}

    fn ping(&self) -> impl Step<()> {
        std::future::ready(Ok(()))
    }

    fn stock(&self, sku: &SkuId) -> impl Step<Option<StockLevel>> {
        self.read(|t| t.stock(sku, Utc::now()))
    }

    fn ledger(&self, sku: &SkuId, page: LedgerPage) -> impl Step<Vec<LedgerEntry>> {
        self.read(|t| t.ledger_page(sku, page))
    }

    fn snapshot(&self) -> impl Step<Vec<SkuSnapshot>> {
        self.read(Tables::snapshot)
    }

    fn order_check(&self) -> impl Step<OrderCheck> {
        self.read(Tables::order_check)
    }

    fn miss_facts(&self, sku: &SkuId, key: Option<&IdempotencyKey>) -> impl Step<MissFacts> {
        self.read(|t| MissFacts {
            row_stock: t.skus.get(sku.as_str()).map(|row| row.stock),
            bucket_stock: 0,
            due_holds: t.has_due_holds(sku, Utc::now()),
            prior: key.and_then(|key| t.by_key(key.as_str())).cloned(),
        })
    }

    fn find_keys(&self, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        self.read(|t| {
            keys.iter()
                .filter_map(|key| t.by_key(key.as_str()))
                .cloned()
                .collect()
        })
    }

    /// The write lock is the only lock: once held, no other write is in progress, so the
    /// lookup is final.
    fn settle_and_find(&self, _sku: &SkuId, keys: &[&IdempotencyKey]) -> impl Step<Vec<LedgerEntry>> {
        async move {
            let _settled = self.begin_tx(LockWait::Wait).await?;
            self.find_keys(keys).await
        }
    }

    fn find_order(&self, order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        self.read(|t| t.find_order(order_id.as_str()))
    }

    fn settle_and_find_order(&self, _skus: &[&SkuId], order_id: &OrderId) -> impl Step<Option<StoredOrder>> {
        async move {
            let _settled = self.begin_tx(LockWait::Wait).await?;
            self.find_order(order_id).await
        }
    }

    fn find_hold(&self, hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        self.read(|t| t.find_hold(hold_id.as_str(), Utc::now()))
    }

    fn settle_and_find_hold(&self, _skus: &[&SkuId], hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        async move {
            let _settled = self.begin_tx(LockWait::Wait).await?;
            self.find_hold(hold_id).await
        }
    }

    fn has_due_holds(&self, sku: &SkuId) -> impl Step<bool> {
        self.read(|t| t.has_due_holds(sku, Utc::now()))
    }

    fn hold_check(&self) -> impl Step<HoldCheck> {
        self.read(Tables::hold_check)
    }

    fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> impl Step<bool> {
        async move {
            let created = self
                .self_contained(|tx| {
                    if initial_stock < 0 {
                        return Err(Fault::bare(FaultKind::CheckViolation, "creating a sku"));
                    }
                    if tx.row(sku).is_some() {
                        return Ok(None);
                    }
                    let row = tables::SkuRow {
                        sku: sku.clone(),
                        stock: initial_stock,
                        reserved: 0,
                        initial_stock,
                        version: -1,
                    };
                    // set_row bumps the version: a new row starts at 0.
                    tx.set_row(row, initial_stock, 0)?;
                    Ok(Some(()))
                })
                .await?;
            Ok(created.is_some())
        }
    }

    fn restock(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        self.self_contained(move |tx| {
            let units = change.quantity.get();
            let Some(row) = tx
                .row(change.sku)
                .filter(|row| row.stock <= crate::STOCK_MAX - units)
            else {
                return Ok(None);
            };
            let stock = row.stock + units;
            tx.set_row(row, stock, 0)?;
            let mut new = deduct_row(change, stock);
            new.delta = units;
            new.reason = LedgerReason::Restock;
            tx.insert(new).map(Some)
        })
    }

    fn guarded_deduct(&self, change: Change<'_>) -> impl Step<Option<Written>> {
        self.self_contained(move |tx| {
            let units = change.quantity.get();
            let Some(row) = tx.row(change.sku).filter(|row| row.stock >= units) else {
                return Ok(None);
            };
            let stock = row.stock - units;
            tx.set_row(row, stock, 0)?;
            tx.insert(deduct_row(change, stock)).map(Some)
        })
    }

    fn read_versioned(&self, sku: &SkuId) -> impl Step<Option<VersionedRow>> {
        self.read(|t| {
            t.skus.get(sku.as_str()).map(|row| VersionedRow {
                stock: row.stock,
                version: row.version,
                sharded: false,
            })
        })
    }

    fn compare_and_set(
        &self,
        change: Change<'_>,
        read: VersionedRow,
        row_stock_after: i64,
    ) -> impl Step<Option<Written>> {
        self.self_contained(move |tx| {
            let Some(row) = tx.row(change.sku).filter(|row| row.version == read.version) else {
                return Ok(None);
            };
            tx.set_row(row, row_stock_after, 0)?;
            tx.insert(deduct_row(change, row_stock_after)).map(Some)
        })
    }

    fn begin(&self, wait: LockWait) -> impl Step<Self::Tx> {
        self.begin_tx(wait)
    }

    fn lock_row(&self, tx: &mut Self::Tx, sku: &SkuId, _wait: LockWait) -> impl Step<Option<LockedRow>> {
        std::future::ready(Ok(tx.row(sku).map(|row| LockedRow {
            stock: row.stock,
            bucket_offset: 0,
            sharded: false,
        })))
    }

    fn write_row(
        &self,
        tx: &mut Self::Tx,
        change: Change<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        std::future::ready(
            tx.set_stock(change.sku, row_stock_after, 0)
                .and_then(|()| tx.insert(deduct_row(change, stock_after))),
        )
    }

    fn write_batch(&self, tx: &mut Self::Tx, sku: &SkuId, plan: &BatchPlan) -> impl Step<Vec<i64>> {
        let written = tx.set_stock(sku, plan.stock_after, 0).and_then(|()| {
            plan.new_rows
                .iter()
                .map(|new| {
                    tx.insert(NewRow {
                        sku,
                        delta: -new.quantity,
                        stock_after: new.stock_after,
                        reason: LedgerReason::Deduct,
                        key: Some(new.idempotency_key.as_str()),
                        reference: None,
                        adjustment: None,
                    })
                    .map(|w| w.ledger_id)
                })
                .collect()
        });
        std::future::ready(written)
    }

    fn claim_order(
        &self,
        tx: &mut Self::Tx,
        order_id: &OrderId,
        lines: &str,
        line_count: usize,
    ) -> impl Step<()> {
        std::future::ready(tx.claim_order(order_id, lines, line_count))
    }

    fn claim_hold(
        &self,
        tx: &mut Self::Tx,
        hold_id: &HoldId,
        lines: &str,
        line_count: usize,
        ttl_s: u32,
    ) -> impl Step<DateTime<Utc>> {
        std::future::ready(tx.claim_hold(hold_id, lines, line_count, ttl_s))
    }

    fn lock_hold(&self, tx: &mut Self::Tx, hold_id: &HoldId) -> impl Step<Option<StoredHold>> {
        std::future::ready(Ok(tx.hold(hold_id)))
    }

    /// One writer at a time: no other transaction has a hold locked, so none is skipped.
    fn lock_due_holds(
        &self,
        tx: &mut Self::Tx,
        sku: Option<&SkuId>,
        limit: u32,
    ) -> impl Step<Vec<StoredHold>> {
        std::future::ready(Ok(tx.due_holds(sku, limit)))
    }

    fn set_hold_state(&self, tx: &mut Self::Tx, hold_id: &HoldId, state: HoldState) -> impl Step<()> {
        std::future::ready(tx.set_hold_state(hold_id, state))
    }

    fn write_line(
        &self,
        tx: &mut Self::Tx,
        line: LineWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        std::future::ready(
            tx.set_stock(line.sku, row_stock_after, line.reserved_delta())
                .and_then(|()| tx.insert(line_row(line, stock_after))),
        )
    }

    fn guarded_line(&self, tx: &mut Self::Tx, line: LineWrite<'_>) -> impl Step<Option<Written>> {
        let outcome = match tx.row(line.sku) {
            Some(row) if row.stock + line.stock_delta() >= 0 && row.reserved + line.reserved_delta() >= 0 => {
                let stock = row.stock + line.stock_delta();
                tx.set_row(row, stock, line.reserved_delta())
                    .and_then(|()| tx.insert(line_row(line, stock)))
                    .map(Some)
            }
            _ => Ok(None),
        };
        std::future::ready(outcome)
    }

    fn write_adjustment(
        &self,
        tx: &mut Self::Tx,
        adjustment: AdjustWrite<'_>,
        row_stock_after: i64,
        stock_after: i64,
    ) -> impl Step<Written> {
        std::future::ready(tx.set_stock(adjustment.sku, row_stock_after, 0).and_then(|()| {
            tx.insert(NewRow {
                sku: adjustment.sku,
                delta: adjustment.delta,
                stock_after,
                reason: LedgerReason::Adjust,
                key: Some(adjustment.key.as_str()),
                reference: adjustment.reference,
                adjustment: Some(adjustment.kind),
            })
        }))
    }

    fn commit(&self, tx: Self::Tx) -> impl Step<()> {
        async move {
            // A database's COMMIT is a round trip: its caller is suspended until the answer,
            // and other callers queue meanwhile (the coalescer's batches form there). Without
            // this one suspension, a loaded machine could run every order to its end alone,
            // and `coalesced_order_batches` saw 67 orders in 67 batches under `cargo test
            // --workspace`.
            tokio::task::yield_now().await;
            tx.commit();
            Ok(())
        }
    }

    async fn rollback(&self, tx: Self::Tx) {
        // The working copy is dropped with it, and the write lock released.
        drop(tx);
    }
}
