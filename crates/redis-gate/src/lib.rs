//! A Redis admission gate in front of stockguard, for flash sales.
//!
//! One Lua script per SKU atomically checks and decrements an admission counter and records
//! the admission in flight under its idempotency key. An admitted request goes on to the
//! database through the engine, which decides; its record is then removed (committed), given
//! back with its units (definitely nothing changed), or kept (`outcome_unknown`, until its key
//! resolves it). A refused admission answers `insufficient_stock` without touching the
//! database, which is what turns away the buyers who arrive after sell-out.
//!
//! The database is the truth: the gate can refuse too much (undersell, until the reconciler
//! recomputes the counter) but never admit a sale the database has not committed, so it can
//! never oversell. See `docs/redis.md` for the failure table.
//!
//! ```no_run
//! # async fn run(store: stockguard_sqlite::SqliteStore) -> Result<(), stockguard_core::DeductError> {
//! use std::sync::Arc;
//! use stockguard_redis_gate::{Gate, GateConfig, GatedStore, RedisTarget, Reconciler};
//!
//! let target = RedisTarget::parse("redis://127.0.0.1:6379").expect("url");
//! let gate = Arc::new(Gate::connect(GateConfig::new(target)).await?);
//! let store = Arc::new(GatedStore::new(store, Arc::clone(&gate)));
//! let reconciler = Reconciler::spawn(gate, Arc::clone(&store));
//! // ... serve requests with `store` ...
//! reconciler.stop().await;
//! # Ok(())
//! # }
//! ```

mod bypass_log;
mod bypassed;
mod config;
mod counters;
mod gate;
mod gated_store;
mod hints;
mod link;
mod reconciler;
mod scope;
mod scripts;
mod sold_out;
mod stats;

pub use bypass_log::BYPASSED_KEYS_MAX;
pub use config::{
    DONE_MAX_LIMIT, GateConfig, NAMESPACE_MAX_LEN, RECONCILE_BATCH_MAX, RECONCILE_INTERVAL_MAX,
    REDIS_TIMEOUT_MAX, REPLAY_WINDOW_MAX, REPLAY_WINDOW_MIN, RedisDownPolicy, SOLD_OUT_HINT_MAX,
    UNKNOWN_GRACE_MAX,
};
pub use counters::{PRIME_IN_FLIGHT_MAX, Reconciled};
pub use gate::{Admission, Gate, Outcome, ReconcileError};
pub use gated_store::GatedStore;
pub use hints::{HINT_KEYS_MAX, HINTED_SKUS_MAX};
pub use link::RedisTarget;
pub use reconciler::Reconciler;
pub use scope::{GateScope, SCOPE_ENTRIES_MAX};
pub use stats::GateStats;
