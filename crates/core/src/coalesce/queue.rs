//! The in-process handoff behind group commit: per-key FIFO queues plus a count of the key's
//! leaders, changed together under one lock.
//!
//! A key may have up to `max_leaders_per_key` leaders, each taking batches in turn, so that
//! the next batch is already sent (and waiting on the row lock in the database) while the
//! previous one commits. With one leader per key, batches of a key are applied one at a time.
//!
//! The invariant that makes it lose nothing: a key is in the map exactly while it has at
//! least one leader, and a leader stops only in the critical section where it finds the
//! queue empty. `push` makes the caller a leader when the key has fewer than the limit;
//! (and its queue is deep enough); otherwise every leader will look again (`keep_leading` or `take_batch`) before stopping, so an item is either
//! seen by some leader's next `take_batch`, or its pusher became a leader.
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
    /// Queued, and the key had fewer leaders than its limit: the caller is now one of them
    /// and must drive `take_batch` until it returns `None`.
    Lead,
    /// Queued behind the key's leaders (as many as the limit), who will take it.
    Joined,
    /// The key's queue, or all queues together, are at their depth limit; the item is
    /// handed back, not queued.
    Full(T),
    /// The queues are closed; the item is handed back, not queued.
    Closed(T),
}

#[derive(Debug)]
struct KeyQueue<T> {
    items: VecDeque<T>,
    /// Leaders of this key right now: at least 1 while the key is in the map.
    leaders: usize,
}

#[derive(Debug)]
struct State<K, T> {
    queues: HashMap<K, KeyQueue<T>>,
    queued: usize,
    closed: bool,
}

/// Per-key FIFO queues with at most `max_leaders_per_key` leaders per key.
#[derive(Debug)]
pub struct HandoffQueues<K, T> {
    max_depth: usize,
    max_total: usize,
    max_leaders_per_key: usize,
    another_leader_min_queued: usize,
    state: Mutex<State<K, T>>,
}

impl<K: Eq + Hash + Clone, T> HandoffQueues<K, T> {
    /// Queues holding at most `max_depth` pending items per key and `max_total` over all
    /// keys, each key taken by at most `max_leaders_per_key` leaders at once; a pusher joining
    /// a led key becomes another leader only once the key's queue holds
    /// `another_leader_min_queued` items with its own (each at least 1).
    pub fn new(
        max_depth: usize,
        max_total: usize,
        max_leaders_per_key: usize,
        another_leader_min_queued: usize,
    ) -> Self {
        Self {
            max_depth: max_depth.max(1),
            max_total: max_total.max(1),
            max_leaders_per_key: max_leaders_per_key.max(1),
            another_leader_min_queued: another_leader_min_queued.max(1),
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
    /// so the choice and the enqueue are one step. Joining a key with fewer leaders than its
    /// limit makes the caller one more of them.
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
                && chosen.is_none_or(|(_, depth)| queue.items.len() > depth)
            {
                chosen = Some((index, queue.items.len()));
            }
        }
        let pushed = match chosen {
            Some((index, depth)) if depth >= self.max_depth => return (index, Pushed::Full(item)),
            Some((index, _)) => {
                let queue = state
                    .queues
                    .get_mut(&keys[index])
                    .expect("the chosen queue exists under this lock");
                queue.items.push_back(item);
                if queue.leaders < self.max_leaders_per_key
                    && queue.items.len() >= self.another_leader_min_queued
                {
                    queue.leaders += 1;
                    (index, Pushed::Lead)
                } else {
                    (index, Pushed::Joined)
                }
            }
            None => {
                let queue = KeyQueue {
                    items: VecDeque::from([item]),
                    leaders: 1,
                };
                state.queues.insert(keys[0].clone(), queue);
                (0, Pushed::Lead)
            }
        };
        state.queued += 1;
        pushed
    }

    /// Takes up to `max_batch` items in FIFO order. Returns `None`, and ends the caller's
    /// leadership, when the queue is empty; the leader must then stop. The last leader to
    /// stop removes the key.
    pub fn take_batch(&self, key: &K, max_batch: usize) -> Option<Vec<T>> {
        let mut state = self.state.lock().expect("handoff lock poisoned");
        let queue = state.queues.get_mut(key)?;
        if queue.items.is_empty() {
            queue.leaders -= 1;
            if queue.leaders == 0 {
                state.queues.remove(key);
            }
            return None;
        }
        let take = queue.items.len().min(max_batch.max(1));
        let batch: Vec<T> = queue.items.drain(..take).collect();
        state.queued -= batch.len();
        Some(batch)
    }

    /// For a leader about to start a batch it will take later ([`Self::take_batch_keeping_lead`]):
    /// true while `key`'s queue holds items. When it is empty, ends the caller's leadership
    /// (as `take_batch` returning `None` does) and returns false; the leader must then stop.
    pub fn keep_leading(&self, key: &K) -> bool {
        let mut state = self.state.lock().expect("handoff lock poisoned");
        let Some(queue) = state.queues.get_mut(key) else {
            return false;
        };
        if !queue.items.is_empty() {
            return true;
        }
        queue.leaders -= 1;
        if queue.leaders == 0 {
            state.queues.remove(key);
        }
        false
    }

    /// Takes up to `max_batch` items in FIFO order without ever ending leadership: empty when
    /// other leaders took them all since [`Self::keep_leading`]. The leader goes on to call
    /// `keep_leading` again, which decides whether it stops.
    pub fn take_batch_keeping_lead(&self, key: &K, max_batch: usize) -> Vec<T> {
        let mut state = self.state.lock().expect("handoff lock poisoned");
        let Some(queue) = state.queues.get_mut(key) else {
            return Vec::new();
        };
        let take = queue.items.len().min(max_batch.max(1));
        let batch: Vec<T> = queue.items.drain(..take).collect();
        state.queued -= batch.len();
        batch
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
        state.queues.get(key).map_or(0, |queue| queue.items.len())
    }

    /// Items queued across all keys right now (for metrics).
    pub fn total_depth(&self) -> usize {
        self.state.lock().expect("handoff lock poisoned").queued
    }

    /// Keys that have a leader right now.
    pub fn active_keys(&self) -> usize {
        self.state.lock().expect("handoff lock poisoned").queues.len()
    }

    /// Leaders of `key` right now (0 when it has none).
    pub fn leaders(&self, key: &K) -> usize {
        let state = self.state.lock().expect("handoff lock poisoned");
        state.queues.get(key).map_or(0, |queue| queue.leaders)
    }
}
