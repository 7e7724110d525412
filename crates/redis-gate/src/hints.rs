//! The local store of sold-out snapshots behind the gate's hint (`sold_out.rs` says why a
//! refusal from one is true). It knows nothing of Redis: the gate takes the snapshots and
//! asks this store whether one refuses a request.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::{Duration, Instant};

use stockguard_core::{IdempotencyKey, SkuId};

/// Most done keys a snapshot carries; past it, only requests without a client key use it.
pub const HINT_KEYS_MAX: usize = 10_000;
/// Most SKUs with a hint at once (expired ones are dropped to make room).
pub const HINTED_SKUS_MAX: usize = 10_000;

/// One SKU's sold-out snapshot.
#[derive(Debug)]
pub(crate) struct Hint {
    /// When the snapshot was asked for (before Redis answered, so the age errs long).
    pub(crate) taken_at: Instant,
    /// The done hash's keys, or `None` when it is partial or too large.
    pub(crate) done: Option<HashSet<String>>,
}

/// The hints of one gate.
#[derive(Debug, Default)]
pub(crate) struct SoldOutHints {
    hints: RwLock<HashMap<SkuId, Hint>>,
    /// Bumped by every [`SoldOutHints::forget`]: a snapshot taken across one is not kept,
    /// since the counter may have been raised after Redis answered it.
    generation: AtomicU64,
}

impl SoldOutHints {
    /// Drops the SKU's hint (its counter may have been raised).
    pub(crate) fn forget(&self, sku: &SkuId) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.hints
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(sku);
    }

    /// The generation to hand back to [`SoldOutHints::keep`] with a snapshot taken now.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the SKU has a hint younger than `age`.
    pub(crate) fn has_younger_than(&self, sku: &SkuId, age: Duration) -> bool {
        let hints = self.hints.read().unwrap_or_else(PoisonError::into_inner);
        hints.get(sku).is_some_and(|hint| hint.taken_at.elapsed() < age)
    }

    /// Whether the SKU's hint, younger than `ttl`, refuses a request with `client_key`: a key
    /// the client sent may be a replay, which only a complete snapshot can rule out.
    pub(crate) fn refuses(&self, sku: &SkuId, client_key: Option<&IdempotencyKey>, ttl: Duration) -> bool {
        let hints = self.hints.read().unwrap_or_else(PoisonError::into_inner);
        let Some(hint) = hints.get(sku) else { return false };
        if hint.taken_at.elapsed() >= ttl {
            return false;
        }
        match (&hint.done, client_key) {
            (_, None) => true,
            (Some(done), Some(key)) => !done.contains(key.as_str()),
            (None, Some(_)) => false,
        }
    }

    /// Keeps `hint` for the SKU unless a hint was forgotten since `generation`, or the store
    /// is full of hints younger than `ttl`. True when kept.
    pub(crate) fn keep(&self, sku: &SkuId, hint: Hint, generation: u64, ttl: Duration) -> bool {
        let mut hints = self.hints.write().unwrap_or_else(PoisonError::into_inner);
        if self.generation() != generation {
            return false;
        }
        if hints.len() >= HINTED_SKUS_MAX && !hints.contains_key(sku) {
            hints.retain(|_, held| held.taken_at.elapsed() < ttl);
            if hints.len() >= HINTED_SKUS_MAX {
                return false;
            }
        }
        hints.insert(sku.clone(), hint);
        true
    }
}
