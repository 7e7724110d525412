//! The client keys of deductions this engine saw commit, most recent first out: a bounded
//! memory that answers a client's retry without touching the database.
//!
//! It is what lets a batch write its client keys without looking them up first (see
//! `batch.rs`). A retry of a key this process committed is answered here, before it queues;
//! any other used key (committed by another instance, before a restart, or forgotten to make
//! room) is still caught by the ledger's unique index at the write, and the batch runs again
//! with a lookup. So forgetting costs a round trip, never a wrong answer.
//!
//! Remembering is true because a ledger row, once committed, is never changed or deleted:
//! the receipt of a committed deduction stays its receipt.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use crate::domain::{IdempotencyKey, Quantity, Receipt, SkuId};
use crate::error::DeductError;

/// Largest accepted `EngineConfig::recent_keys_max`. A remembered key keeps the key string
/// twice (the map and the eviction order) and its SKU once, so this bounds memory too.
pub const RECENT_KEYS_MAX: usize = 1 << 18;

/// What a remembered deduction answers a retry with.
#[derive(Debug, Clone)]
struct Remembered {
    sku: SkuId,
    quantity: Quantity,
    remaining: i64,
    ledger_id: i64,
}

#[derive(Debug, Default)]
struct Inner {
    by_key: HashMap<IdempotencyKey, Remembered>,
    /// Insertion order, for forgetting the oldest first.
    order: VecDeque<IdempotencyKey>,
}

/// At most `capacity` committed client keys, each with its receipt.
#[derive(Debug)]
pub(crate) struct RecentKeys {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl RecentKeys {
    /// A memory of `capacity` keys; 0 remembers nothing.
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The answer to a retry of `key`, if this engine saw it commit: the stored receipt
    /// (`replayed`), or `IdempotencyKeyReused` when the retry asks for another SKU or quantity,
    /// exactly as a replay read from the ledger would answer.
    pub(crate) fn replay(
        &self,
        key: &IdempotencyKey,
        sku: &SkuId,
        quantity: Quantity,
    ) -> Option<Result<Receipt, DeductError>> {
        if self.capacity == 0 {
            return None;
        }
        let remembered = self.lock().by_key.get(key)?.clone();
        if &remembered.sku != sku || remembered.quantity != quantity {
            return Some(Err(DeductError::IdempotencyKeyReused));
        }
        Some(Ok(Receipt {
            sku: remembered.sku,
            quantity,
            remaining: remembered.remaining,
            ledger_id: remembered.ledger_id,
            attempts: 1,
            replayed: true,
            lock_wait_us: 0,
            idempotency_key: key.clone(),
        }))
    }

    /// Remembers a committed deduction under its client's key, forgetting the oldest key
    /// when full.
    pub(crate) fn remember(&self, receipt: &Receipt) {
        if self.capacity == 0 {
            return;
        }
        let remembered = Remembered {
            sku: receipt.sku.clone(),
            quantity: receipt.quantity,
            remaining: receipt.remaining,
            ledger_id: receipt.ledger_id,
        };
        let mut inner = self.lock();
        if inner
            .by_key
            .insert(receipt.idempotency_key.clone(), remembered)
            .is_some()
        {
            // Already remembered (a replay): its place in the order stands.
            return;
        }
        inner.order.push_back(receipt.idempotency_key.clone());
        while inner.order.len() > self.capacity {
            if let Some(oldest) = inner.order.pop_front() {
                inner.by_key.remove(&oldest);
            }
        }
    }

    /// How many keys are remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().by_key.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves both maps consistent (each step is one
        // call), so a poisoned lock is still safe to use.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receipt(key: &str, sku: &str, quantity: i64, ledger_id: i64) -> Receipt {
        Receipt {
            sku: SkuId::parse(sku).unwrap(),
            quantity: Quantity::new(quantity).unwrap(),
            remaining: 10,
            ledger_id,
            attempts: 3,
            replayed: false,
            lock_wait_us: 5,
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
        }
    }

    fn key(key: &str) -> IdempotencyKey {
        IdempotencyKey::parse(key).unwrap()
    }

    #[test]
    fn a_remembered_key_replays_its_receipt_and_refuses_another_request() {
        let recent = RecentKeys::new(4);
        recent.remember(&receipt("k1", "sku", 2, 7));
        let sku = SkuId::parse("sku").unwrap();
        let replayed = recent
            .replay(&key("k1"), &sku, Quantity::new(2).unwrap())
            .unwrap()
            .unwrap();
        assert!(replayed.replayed);
        assert_eq!(
            (replayed.ledger_id, replayed.remaining, replayed.attempts),
            (7, 10, 1)
        );
        assert!(matches!(
            recent.replay(&key("k1"), &sku, Quantity::new(3).unwrap()),
            Some(Err(DeductError::IdempotencyKeyReused))
        ));
        let other = SkuId::parse("other").unwrap();
        assert!(matches!(
            recent.replay(&key("k1"), &other, Quantity::new(2).unwrap()),
            Some(Err(DeductError::IdempotencyKeyReused))
        ));
        assert!(
            recent
                .replay(&key("k2"), &sku, Quantity::new(2).unwrap())
                .is_none()
        );
    }

    #[test]
    fn the_oldest_key_is_forgotten_first_and_the_bound_holds() {
        let recent = RecentKeys::new(3);
        for i in 0..10 {
            recent.remember(&receipt(&format!("k{i}"), "sku", 1, i));
            assert!(recent.len() <= 3);
        }
        // A replay of a remembered key does not take a second place.
        recent.remember(&receipt("k9", "sku", 1, 9));
        assert_eq!(recent.len(), 3);
        let sku = SkuId::parse("sku").unwrap();
        let one = Quantity::new(1).unwrap();
        for i in 0..7 {
            assert!(
                recent.replay(&key(&format!("k{i}")), &sku, one).is_none(),
                "k{i} forgotten"
            );
        }
        for i in 7..10 {
            assert!(
                recent.replay(&key(&format!("k{i}")), &sku, one).is_some(),
                "k{i} kept"
            );
        }
    }

    #[test]
    fn capacity_zero_remembers_nothing() {
        let recent = RecentKeys::new(0);
        recent.remember(&receipt("k1", "sku", 1, 1));
        let sku = SkuId::parse("sku").unwrap();
        assert!(
            recent
                .replay(&key("k1"), &sku, Quantity::new(1).unwrap())
                .is_none()
        );
    }
}
