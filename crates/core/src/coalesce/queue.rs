//! The in-process handoff behind group commit: per-key FIFO queues plus a "leader active"
//! flag, changed together under one lock.
//!
//! The invariant that makes it lose nothing: a key has a leader exactly while its queue is
//! non-empty or a batch taken from it is still being applied. `push` makes the caller the
//! leader when none is active; `take_batch` clears the flag and removes the key in the same
//! critical section that finds the queue empty. So an item is either seen by the current
//! leader's next `take_batch`, or its pusher became the new leader. Checked by the loom
//! models in `tests/loom_queue.rs`.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

use super::sync::Mutex;

/// What `push` did with the item.
#[derive(Debug)]
pub enum Pushed<T> {
    /// Queued, and no leader was active: the caller must now drive `take_batch` until it
    /// returns `None`.
    Lead,
    /// Queued behind an active leader, who will take it.
    Joined,
    /// The key's queue is at its depth limit; the item is handed back, not queued.
    Full(T),
}

#[derive(Debug)]
struct KeyQueue<T> {
    pending: VecDeque<T>,
}

/// Per-key FIFO queues with at most one leader per key.
#[derive(Debug)]
pub struct HandoffQueues<K, T> {
    max_depth: usize,
    queues: Mutex<HashMap<K, KeyQueue<T>>>,
}

impl<K: Eq + Hash + Clone, T> HandoffQueues<K, T> {
    /// Queues holding at most `max_depth` pending items per key (at least 1).
    pub fn new(max_depth: usize) -> Self {
        Self {
            max_depth: max_depth.max(1),
            queues: Mutex::new(HashMap::new()),
        }
    }

    /// Appends `item` to `key`'s queue. A key is present in the map exactly while it has a leader.
    pub fn push(&self, key: &K, item: T) -> Pushed<T> {
        let mut queues = self.queues.lock().expect("handoff lock poisoned");
        match queues.get_mut(key) {
            Some(queue) if queue.pending.len() >= self.max_depth => Pushed::Full(item),
            Some(queue) => {
                queue.pending.push_back(item);
                Pushed::Joined
            }
            None => {
                let mut pending = VecDeque::new();
                pending.push_back(item);
                queues.insert(key.clone(), KeyQueue { pending });
                Pushed::Lead
            }
        }
    }

    /// Takes up to `max_batch` items in FIFO order. Returns `None`, and ends this key's
    /// leadership, when the queue is empty; the leader must then stop.
    pub fn take_batch(&self, key: &K, max_batch: usize) -> Option<Vec<T>> {
        let mut queues = self.queues.lock().expect("handoff lock poisoned");
        let queue = queues.get_mut(key)?;
        if queue.pending.is_empty() {
            queues.remove(key);
            return None;
        }
        let take = queue.pending.len().min(max_batch.max(1));
        Some(queue.pending.drain(..take).collect())
    }

    /// Items queued for `key` right now (for metrics).
    pub fn depth(&self, key: &K) -> usize {
        let queues = self.queues.lock().expect("handoff lock poisoned");
        queues.get(key).map_or(0, |q| q.pending.len())
    }

    /// Items queued across all keys right now (for metrics).
    pub fn total_depth(&self) -> usize {
        let queues = self.queues.lock().expect("handoff lock poisoned");
        queues.values().map(|q| q.pending.len()).sum()
    }

    /// Keys that have a leader right now.
    pub fn active_keys(&self) -> usize {
        self.queues.lock().expect("handoff lock poisoned").len()
    }
}
