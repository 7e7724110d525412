#![doc = include_str!("../README.md")]

pub mod coalesce;
#[cfg(feature = "test-utils")]
pub mod conformance;
mod domain;
mod error;
pub mod model;
mod retry;
pub mod sharding;
mod store;

pub use coalesce::{
    BatchExecutor, BatchItem, BatchPlan, Coalescer, CoalescerConfig, NewLedgerRow, single_item_outcome,
};
pub use domain::*;
pub use error::{AttemptError, DeductError, InvalidInput, RetryCause};
pub use retry::RetryPolicy;
pub use store::InventoryStore;
