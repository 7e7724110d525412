#![doc = include_str!("../README.md")]

pub mod coalesce;
#[cfg(feature = "test-utils")]
pub mod conformance;
mod domain;
pub mod engine;
mod error;
#[cfg(feature = "test-utils")]
pub mod memory;
pub mod model;
mod retry;
pub mod sharding;
mod store;

pub use coalesce::{BatchExecutor, BatchItem, BatchPlan, Coalescer, CoalescerConfig, NewLedgerRow};
pub use domain::*;
pub use engine::{Backend, Engine, EngineConfig, RECENT_KEYS_MAX};
pub use error::{AttemptError, DeductError, InvalidInput, RetryCause};
pub use retry::RetryPolicy;
pub use store::InventoryStore;
