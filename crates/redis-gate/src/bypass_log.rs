//! What the gate remembers of sales made without an in-flight record until Redis has them
//! (`bypassed.rs` writes them and says why). It knows nothing of Redis.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};

use stockguard_core::{IdempotencyKey, SkuId};

/// Most keys kept per process while Redis is down; past it, the SKU is marked partial
/// instead (its short admissions then check their key in the database).
pub const BYPASSED_KEYS_MAX: usize = 10_000;

/// What waits to be written to Redis.
#[derive(Debug, Default)]
pub(crate) struct Bypassed {
    /// Set while anything waits, so an admission reads one atomic on the fast path.
    pending: AtomicBool,
    /// Held across a flush, so an admission that finds something pending waits for the
    /// flush in progress instead of deciding before it.
    pub(crate) unrecorded: tokio::sync::Mutex<Unrecorded>,
}

impl Bypassed {
    /// Whether a sale made without a record waits to be written.
    pub(crate) fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    /// Something waits (called with `unrecorded` held).
    pub(crate) fn set_pending(&self) {
        self.pending.store(true, Ordering::Release);
    }

    /// Everything was written (called with `unrecorded` held and empty).
    pub(crate) fn clear_pending(&self) {
        self.pending.store(false, Ordering::Release);
    }
}

/// The sales themselves.
#[derive(Debug, Default)]
pub(crate) struct Unrecorded {
    /// Committed keys and their units, per SKU.
    pub(crate) committed: BTreeMap<SkuId, Vec<(IdempotencyKey, i64)>>,
    /// Keys in `committed`.
    pub(crate) keys: usize,
    /// SKUs with a sale whose outcome is unknown, or past the bound: marked partial.
    pub(crate) partial: BTreeSet<SkuId>,
}

impl Unrecorded {
    /// Remembers a committed key, or marks its SKU partial past [`BYPASSED_KEYS_MAX`].
    pub(crate) fn committed(&mut self, sku: &SkuId, key: &IdempotencyKey, units: i64) {
        if self.keys < BYPASSED_KEYS_MAX {
            self.committed
                .entry(sku.clone())
                .or_default()
                .push((key.clone(), units));
            self.keys += 1;
        } else {
            self.partial.insert(sku.clone());
        }
    }
}
