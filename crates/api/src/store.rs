//! The store the service runs on, chosen at start-up from the database URL.
//!
//! `InventoryStore` is generic (its methods return `impl Future`), so it cannot be a trait
//! object; an enum that delegates each call keeps the service monomorphic without `dyn`.
//!
//! Every store in the workspace outside the adapters' own tests is opened here, by
//! [`AnyStore::connect`] from a [`StoreSettings`]: the service's, and the bench's (which
//! measures the library in-process and over HTTP on the same configuration).

use std::time::Duration;

use stockguard_core::coalesce::CoalescerStats;
use stockguard_core::engine::{EngineStats, PoolWaitStats};
use stockguard_core::{
    AdjustReceipt, AdjustRequest, AuditReport, Capabilities, ConfirmLines, DeductError, DeductRequest,
    EngineConfig, HoldId, HoldReceipt, HoldRequest, IdempotencyKey, IncrementalAuditReport, InventoryStore,
    LedgerEntry, LedgerPage, OrderReceipt, OrderRequest, PoolStatus, ProbeReport, Receipt, RestockReceipt,
    RestockRequest, SkuId, SkuSnapshot, StockLevel,
};
use stockguard_mysql::{MySqlConfig, MySqlStore};
use stockguard_postgres::{PgConfig, PgStore};
use stockguard_sqlite::{SqliteConfig, SqliteStore};

use crate::config::{
    DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_POOL_SIZE, DatabaseTarget, Settings,
};

/// What opening a store takes: where the data lives, and the limits every adapter shares.
/// The rest of each adapter's configuration keeps the adapter's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreSettings {
    /// Where the data lives.
    pub database: DatabaseTarget,
    /// Most pooled connections.
    pub pool_size: u32,
    /// Wait for a pooled connection before `Unavailable`.
    pub acquire_timeout: Duration,
    /// Wait for a row lock (SQLite: the write lock, its busy timeout) before `LockTimeout`.
    pub lock_timeout: Duration,
    /// Buckets a `sharded` SKU's stock is spread over (PostgreSQL and MySQL/MariaDB).
    pub shard_buckets: u32,
    /// `sharded` spreads a SKU on its first deduction instead of on contention.
    pub spread_eagerly: bool,
    /// Client keys of committed deductions the engine keeps to answer retries.
    pub recent_keys_max: usize,
    /// The engine's bound on one whole call (see `EngineConfig::deadline`).
    pub deadline: Duration,
}

impl StoreSettings {
    /// The service's defaults for everything but the target.
    pub fn new(database: DatabaseTarget) -> Self {
        Self {
            database,
            pool_size: DEFAULT_POOL_SIZE,
            acquire_timeout: Duration::from_millis(DEFAULT_ACQUIRE_TIMEOUT_MS),
            lock_timeout: Duration::from_millis(DEFAULT_LOCK_TIMEOUT_MS),
            shard_buckets: stockguard_core::sharding::DEFAULT_SHARD_BUCKETS,
            spread_eagerly: false,
            recent_keys_max: EngineConfig::default().recent_keys_max,
            deadline: EngineConfig::default().deadline,
        }
    }
}

impl From<&Settings> for StoreSettings {
    fn from(settings: &Settings) -> Self {
        Self {
            database: settings.database.clone(),
            pool_size: settings.pool_size,
            acquire_timeout: settings.acquire_timeout,
            lock_timeout: settings.lock_timeout,
            shard_buckets: settings.shard_buckets,
            spread_eagerly: settings.spread_eagerly,
            recent_keys_max: settings.recent_keys_max,
            deadline: engine_deadline(settings.request_timeout),
        }
    }
}

/// One of the supported stores.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum AnyStore {
    /// PostgreSQL.
    Postgres(PgStore),
    /// MySQL 8 or MariaDB.
    MySql(MySqlStore),
    /// An embedded SQLite file.
    Sqlite(SqliteStore),
}

/// Runs `$body` with `$store` bound to the inner store, whatever the variant.
macro_rules! delegate {
    ($self:expr, $store:ident => $body:expr) => {
        match $self {
            AnyStore::Postgres($store) => $body,
            AnyStore::MySql($store) => $body,
            AnyStore::Sqlite($store) => $body,
        }
    };
}

impl AnyStore {
    /// Connects to the configured database (creating a SQLite file if missing). Does not
    /// migrate. Takes the service's [`Settings`] or a [`StoreSettings`].
    pub async fn connect(settings: impl Into<StoreSettings>) -> Result<Self, DeductError> {
        let settings: StoreSettings = settings.into();
        let engine = engine_config(&settings);
        match &settings.database {
            DatabaseTarget::Postgres(url) => {
                let mut config = PgConfig::new(url.clone());
                config.max_connections = settings.pool_size;
                config.acquire_timeout = settings.acquire_timeout;
                config.lock_timeout = settings.lock_timeout;
                config.engine = engine;
                Ok(Self::Postgres(PgStore::connect(config).await?))
            }
            DatabaseTarget::MySql(url) => {
                let mut config = MySqlConfig::new(url.clone());
                config.max_connections = settings.pool_size;
                config.acquire_timeout = settings.acquire_timeout;
                config.lock_timeout = settings.lock_timeout;
                config.engine = engine;
                Ok(Self::MySql(MySqlStore::connect(config).await?))
            }
            DatabaseTarget::Sqlite(path) => {
                let mut config = SqliteConfig::new(path.clone());
                config.max_connections = settings.pool_size;
                config.acquire_timeout = settings.acquire_timeout;
                config.busy_timeout = settings.lock_timeout;
                config.engine = engine;
                Ok(Self::Sqlite(SqliteStore::connect(config).await?))
            }
        }
    }

    /// Retries, resolutions and unknown outcomes, for metrics.
    pub fn engine_stats(&self) -> &EngineStats {
        delegate!(self, store => store.stats())
    }

    /// How long calls waited for a pooled connection, for metrics.
    pub fn pool_wait(&self) -> &PoolWaitStats {
        delegate!(self, store => store.pool_wait())
    }

    /// Applies the adapter's embedded migrations.
    pub async fn migrate(&self) -> Result<(), DeductError> {
        delegate!(self, store => store.migrate().await)
    }

    /// Asks the server what it really does (after [`AnyStore::migrate`]) and refuses, from
    /// then on, every strategy it cannot honour (see `Engine::probe`).
    pub async fn probe(&self) -> Result<ProbeReport, DeductError> {
        delegate!(self, store => store.probe().await)
    }

    /// The last probe's report, if one has run.
    pub fn probe_report(&self) -> Option<ProbeReport> {
        delegate!(self, store => store.probe_report())
    }

    /// Group-commit counters and the number of requests queued right now.
    pub fn coalescer_stats(&self) -> (&CoalescerStats, usize) {
        delegate!(self, store => (store.coalescer().stats(), store.coalescer().queue_depth()))
    }
}

impl InventoryStore for AnyStore {
    fn backend(&self) -> &'static str {
        delegate!(self, store => store.backend())
    }

    fn capabilities(&self) -> Capabilities {
        delegate!(self, store => store.capabilities())
    }

    async fn create_sku(&self, sku: &SkuId, initial_stock: i64) -> Result<StockLevel, DeductError> {
        delegate!(self, store => store.create_sku(sku, initial_stock).await)
    }

    async fn restock(&self, request: RestockRequest) -> Result<RestockReceipt, DeductError> {
        delegate!(self, store => store.restock(request).await)
    }

    async fn deduct(&self, request: DeductRequest) -> Result<Receipt, DeductError> {
        delegate!(self, store => store.deduct(request).await)
    }

    async fn place_order(&self, order: OrderRequest) -> Result<OrderReceipt, DeductError> {
        delegate!(self, store => store.place_order(order).await)
    }

    async fn adjust(&self, request: AdjustRequest) -> Result<AdjustReceipt, DeductError> {
        delegate!(self, store => store.adjust(request).await)
    }

    async fn reserve(&self, hold: HoldRequest) -> Result<HoldReceipt, DeductError> {
        delegate!(self, store => store.reserve(hold).await)
    }

    async fn hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        delegate!(self, store => store.hold(hold_id).await)
    }

    async fn confirm_hold(&self, hold_id: &HoldId, lines: ConfirmLines) -> Result<HoldReceipt, DeductError> {
        delegate!(self, store => store.confirm_hold(hold_id, lines).await)
    }

    async fn release_hold(&self, hold_id: &HoldId) -> Result<HoldReceipt, DeductError> {
        delegate!(self, store => store.release_hold(hold_id).await)
    }

    async fn sweep_holds(&self, batch: u32) -> Result<usize, DeductError> {
        delegate!(self, store => store.sweep_holds(batch).await)
    }

    async fn stock(&self, sku: &SkuId) -> Result<StockLevel, DeductError> {
        delegate!(self, store => store.stock(sku).await)
    }

    async fn ledger(&self, sku: &SkuId, page: LedgerPage) -> Result<Vec<LedgerEntry>, DeductError> {
        delegate!(self, store => store.ledger(sku, page).await)
    }

    async fn committed_keys(&self, keys: &[IdempotencyKey]) -> Result<Vec<IdempotencyKey>, DeductError> {
        delegate!(self, store => store.committed_keys(keys).await)
    }

    async fn snapshot(&self) -> Result<Vec<SkuSnapshot>, DeductError> {
        delegate!(self, store => store.snapshot().await)
    }

    async fn audit(&self) -> Result<AuditReport, DeductError> {
        delegate!(self, store => store.audit().await)
    }

    async fn audit_incremental(&self) -> Result<IncrementalAuditReport, DeductError> {
        delegate!(self, store => store.audit_incremental().await)
    }

    async fn ping(&self) -> Result<(), DeductError> {
        delegate!(self, store => store.ping().await)
    }

    fn pool_status(&self) -> PoolStatus {
        delegate!(self, store => store.pool_status())
    }

    async fn close(&self) {
        delegate!(self, store => store.close().await)
    }
}

/// The engine's settings from the service's: the engine answers before the HTTP request
/// timeout would cut the call off, so every answer comes from the engine and is true.
fn engine_config(settings: &StoreSettings) -> EngineConfig {
    let mut engine = EngineConfig {
        shard_buckets: settings.shard_buckets,
        spread_eagerly: settings.spread_eagerly,
        recent_keys_max: settings.recent_keys_max,
        deadline: settings.deadline,
        ..EngineConfig::default()
    };
    // Group commit holds at most half the pool, so other strategies and reads keep theirs.
    engine.coalescer.max_in_flight_batches = usize::try_from(settings.pool_size / 2).unwrap_or(1).max(1);
    engine
}

/// The HTTP request timeout less a margin for the answer to travel: 10 % of it, at least
/// 100 ms, and never below 100 ms itself.
fn engine_deadline(request_timeout: std::time::Duration) -> std::time::Duration {
    let margin = (request_timeout / 10).max(std::time::Duration::from_millis(100));
    request_timeout
        .saturating_sub(margin)
        .max(std::time::Duration::from_millis(100))
}
