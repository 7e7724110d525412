//! The in-process handoff behind group commit: per-key FIFO queues plus a "leader active"
//! flag, changed together under one lock.
//!
//! The invariant that makes it lose nothing: a key has a leader exactly while its queue is
//! non-empty or a batch taken from it is still being applied. `push` makes the caller the
//! leader when none is active; `take_batch` clears the flag and removes the key in the same
//! critical section that finds the queue empty. So an item is either seen by the current
//! leader's next `take_batch`, or its pusher became the new leader.
//!
//! Closing is a barrier: `close` sets a flag under the same lock, after which `push` refuses
//! every item, so once [`HandoffQueues::is_idle`] is true after `close`, no item is queued
//! and none ever will be. Checked by the loom models in `tests/loom_queue.rs`.

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
    /// The key's queue, or all queues together, are at their depth limit; the item is
    /// handed back, not queued.
    Full(T),
    /// The queues are closed; the item is handed back, not queued.
    Closed(T),
}

#[derive(Debug)]
struct State<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    queued: usize,
    closed: bool,
}

/// Per-key FIFO queues with at most one leader per key.
#[derive(Debug)]
pub struct HandoffQueues<K, T> {
    max_depth: usize,
    max_total: usize,
    state: Mutex<State<K, T>>,
}

impl<K: Eq + Hash + Clone, T> HandoffQueues<K, T> {
    /// Queues holding at most `max_depth` pending items per key and `max_total` over all
    /// keys (each at least 1).
    pub fn new(max_depth: usize, max_total: usize) -> Self {
        Self {
            max_depth: max_depth.max(1),
            max_total: max_total.max(1),
            state: Mutex::new(State {
                queues: HashMap::new(),
                queued: 0,
                closed: false,
            }),
        }
    }

    /// Appends `item` to `key`'s queue. A key is present in the map exactly while it has a leader.
    pub fn push(&self, key: &K, item: T) -> Pushed<T> {
        self.push_any(std::slice::from_ref(key), item).1
    }

    /// Appends `item` to one of `keys`' queues (at least one key): the longest queue among
    /// those that have a leader, so that an order spanning several SKUs joins the batch
    /// already forming on its hot SKU; when none has a leader, `keys[0]`'s, and the caller
    /// leads it. Returns the index of the chosen key. Decided under the same lock as `push`,
    /// so the choice and the enqueue are one step.
    pub fn push_any(&self, keys: &[K], item: T) -> (usize, Pushed<T>) {
        assert!(!keys.is_empty(), "push_any needs at least one key");
        let mut state = self.state.lock().expect("handoff lock poisoned");
        if state.closed {
            return (0, Pushed::Closed(item));
        }
        if state.queued >= self.max_total {
            return (0, Pushed::Full(item));
        }
        let mut chosen: Option<(usize, usize)> = None;
        for (index, key) in keys.iter().enumerate() {
            if let Some(queue) = state.queues.get(key)
                && chosen.is_none_or(|(_, depth)| queue.len() > depth)
            {
                chosen = Some((index, queue.len()));
            }
        }
        let pushed = match chosen {
            Some((index, depth)) if depth >= self.max_depth => return (index, Pushed::Full(item)),
            Some((index, _)) => {
                state
                    .queues
                    .get_mut(&keys[index])
                    .expect("the chosen queue exists under this lock")
                    .push_back(item);
                (index, Pushed::Joined)
            }
            None => {
                state.queues.insert(keys[0].clone(), VecDeque::from([item]));
                (0, Pushed::Lead)
            }
        };
        state.queued += 1;
        pushed
    }

    /// Takes up to `max_batch` items in FIFO order. Returns `None`, and ends this key's
    /// leadership, when the queue is empty; the leader must then stop.
    pub fn take_batch(&self, key: &K, max_batch: usize) -> Option<Vec<T>> {
        let mut state = self.state.lock().expect("handoff lock poisoned");
        let queue = state.queues.get_mut(key)?;
        if queue.is_empty() {
            state.queues.remove(key);
            return None;
        }
        let take = queue.len().min(max_batch.max(1));
        let batch: Vec<T> = queue.drain(..take).collect();
        state.queued -= batch.len();
        Some(batch)
    }

    /// Refuses every later `push`. Items already queued stay for their leaders.
    pub fn close(&self) {
        self.state.lock().expect("handoff lock poisoned").closed = true;
    }

    /// True when no key has a leader: nothing is queued or being applied.
    pub fn is_idle(&self) -> bool {
        self.state
            .lock()
            .expect("handoff lock poisoned")
            .queues
            .is_empty()
    }

    /// Items queued for `key` right now (for metrics).
    pub fn depth(&self, key: &K) -> usize {
        let state = self.state.lock().expect("handoff lock poisoned");
        state.queues.get(key).map_or(0, VecDeque::len)
    }

    /// Items queued across all keys right now (for metrics).
    pub fn total_depth(&self) -> usize {
        self.state.lock().expect("handoff lock poisoned").queued
    }

    /// Keys that have a leader right now.
    pub fn active_keys(&self) -> usize {
        self.state.lock().expect("handoff lock poisoned").queues.len()
    }
}
