//! Loom models of the group-commit handoff (`coalesce::queue`). They check, over every
//! interleaving loom explores, that each pushed request is taken by exactly one leader
//! exactly once: none lost when a leader finishes while new requests arrive, none taken
//! twice, and at most one leader per SKU at any time; and that closing is a barrier: once
//! the queues are closed and idle, no accepted request is left untaken and none is accepted;
//! and, for orders spanning several SKUs (`push_any`), that each is taken exactly once
//! whichever of its SKUs' queues it joins; and, with two leaders per key (pipelined
//! batches), that no request is lost or taken twice and no more than two leaders apply one
//! key's batches at once.
//!
//! Run with `just loom` (`RUSTFLAGS="--cfg loom" cargo test -p stockguard-core --test loom_queue --release`).
#![cfg(loom)]

use loom::sync::Arc;
use loom::sync::atomic::{AtomicUsize, Ordering};
use loom::thread;
use stockguard_core::coalesce::queue::{HandoffQueues, Pushed};

/// What a request records when a leader takes it: how often it was taken.
struct Slot {
    taken: AtomicUsize,
}

/// A leader: take batches until the queue says stop, answering each request once.
/// `applying` counts leaders inside a batch: with one leader per key it never exceeds 1.
fn lead(queues: &HandoffQueues<u8, Arc<Slot>>, key: u8, applying: &AtomicUsize, max_batch: usize) {
    lead_among(queues, key, applying, max_batch, 1);
}

/// [`lead`] for a key allowed `max_leaders` leaders: never more apply its batches at once.
fn lead_among(
    queues: &HandoffQueues<u8, Arc<Slot>>,
    key: u8,
    applying: &AtomicUsize,
    max_batch: usize,
    max_leaders: usize,
) {
    // As the coalescer's leader: stay on while the queue holds items, wait (for the row
    // lock, in the engine), then take whatever is queued by then, which may be nothing when
    // another leader of the key took it meanwhile.
    while queues.keep_leading(&key) {
        thread::yield_now();
        let batch = queues.take_batch_keeping_lead(&key, max_batch);
        assert!(
            applying.fetch_add(1, Ordering::SeqCst) < max_leaders,
            "more leaders applying one key's batches at once than its limit"
        );
        for slot in batch {
            slot.taken.fetch_add(1, Ordering::SeqCst);
        }
        // Give other threads a chance to push while this batch is "in the database".
        thread::yield_now();
        applying.fetch_sub(1, Ordering::SeqCst);
    }
}

fn submit(
    queues: &HandoffQueues<u8, Arc<Slot>>,
    key: u8,
    applying: &AtomicUsize,
    max_batch: usize,
    max_leaders: usize,
) -> Arc<Slot> {
    let slot = Arc::new(Slot {
        taken: AtomicUsize::new(0),
    });
    match queues.push(&key, Arc::clone(&slot)) {
        Pushed::Lead => lead_among(queues, key, applying, max_batch, max_leaders),
        Pushed::Joined => {}
        Pushed::Full(_) | Pushed::Closed(_) => panic!("limits and closing not expected in this model"),
    }
    slot
}

fn check(requests: usize, max_batch: usize) {
    check_with_leaders(requests, max_batch, 1);
}

fn check_with_leaders(requests: usize, max_batch: usize, max_leaders: usize) {
    // A preemption bound keeps the three-thread models to seconds; the races these models
    // are after (a push landing between a leader's last batch and its exit) need at most two
    // preemptions. `LOOM_MAX_PREEMPTIONS` overrides it for a deeper run.
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        let queues = Arc::new(HandoffQueues::<u8, Arc<Slot>>::new(16, 64, max_leaders, 1));
        let applying = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..requests)
            .map(|_| {
                let queues = Arc::clone(&queues);
                let applying = Arc::clone(&applying);
                thread::spawn(move || submit(&queues, 7, &applying, max_batch, max_leaders))
            })
            .collect();
        let slots: Vec<Arc<Slot>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for slot in &slots {
            assert_eq!(
                slot.taken.load(Ordering::SeqCst),
                1,
                "a request was lost or taken twice"
            );
        }
        assert_eq!(queues.leaders(&7), 0, "a leader left dangling");
        assert_eq!(queues.active_keys(), 0, "leadership left dangling");
        assert_eq!(queues.total_depth(), 0);
    });
}

#[test]
fn two_requests_batch_of_one() {
    check(2, 1);
}

#[test]
fn three_requests_batch_of_two() {
    check(3, 2);
}

#[test]
fn three_requests_batch_of_one() {
    check(3, 1);
}

#[test]
fn depth_limit_hands_the_item_back_and_keys_are_independent() {
    loom::model(|| {
        let queues = Arc::new(HandoffQueues::<u8, u8>::new(2, 3, 1, 1));
        assert!(matches!(queues.push(&1, 10), Pushed::Lead));
        assert!(matches!(queues.push(&1, 11), Pushed::Joined));
        assert!(matches!(queues.push(&1, 12), Pushed::Full(12)));
        let other = {
            let queues = Arc::clone(&queues);
            thread::spawn(move || matches!(queues.push(&2, 20), Pushed::Lead))
        };
        assert_eq!(queues.take_batch(&1, 8), Some(vec![10, 11]));
        assert_eq!(queues.take_batch(&1, 8), None);
        assert!(other.join().unwrap(), "another key has its own leader");
        // The total bound counts every key: 2 queued for key 1 was drained, 1 for key 2.
        assert!(matches!(queues.push(&3, 30), Pushed::Lead));
        assert!(matches!(queues.push(&4, 40), Pushed::Lead));
        assert!(matches!(queues.push(&5, 50), Pushed::Full(50)));
    });
}

/// A submitter races `close`. Whatever the interleaving, the submitter's item is either
/// refused (`Closed`) or taken by a leader; and once the closer sees the queues idle after
/// closing, nothing is queued or led, and nothing can be pushed any more.
#[test]
fn close_is_a_barrier() {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(|| {
        let queues = Arc::new(HandoffQueues::<u8, Arc<Slot>>::new(16, 64, 1, 1));
        let leaders_now = Arc::new(AtomicUsize::new(0));
        let close_returned = Arc::new(AtomicUsize::new(0));
        let submitter = {
            let queues = Arc::clone(&queues);
            let leaders_now = Arc::clone(&leaders_now);
            let close_returned = Arc::clone(&close_returned);
            thread::spawn(move || {
                let slot = Arc::new(Slot {
                    taken: AtomicUsize::new(0),
                });
                let pushed = queues.push(&7, Arc::clone(&slot));
                // An accepted push keeps the queues busy until it is taken, so close cannot
                // have returned before it: if it has, the push came after the barrier.
                if matches!(pushed, Pushed::Lead | Pushed::Joined) {
                    assert_eq!(
                        close_returned.load(Ordering::SeqCst),
                        0,
                        "a request was accepted after close returned"
                    );
                }
                match pushed {
                    Pushed::Lead => {
                        lead(&queues, 7, &leaders_now, 1);
                        Some(slot)
                    }
                    Pushed::Joined => Some(slot),
                    Pushed::Closed(_) => None,
                    Pushed::Full(_) => panic!("no limit in this model"),
                }
            })
        };
        queues.close();
        // The closer waits (as `Coalescer::close` does) until no key has a leader.
        while !queues.is_idle() {
            thread::yield_now();
        }
        close_returned.store(1, Ordering::SeqCst);
        assert_eq!(queues.total_depth(), 0, "close returned with work queued");
        let late = Arc::new(Slot {
            taken: AtomicUsize::new(0),
        });
        assert!(
            matches!(queues.push(&7, late), Pushed::Closed(_)),
            "a push after close was accepted"
        );
        if let Some(slot) = submitter.join().unwrap() {
            assert_eq!(
                slot.taken.load(Ordering::SeqCst),
                1,
                "an accepted request was not taken before close returned"
            );
        }
    });
}

/// An order spanning several SKUs: it joins the longest forming batch among its SKUs, or
/// leads one on its first SKU. `applying[key]` counts leaders inside one of `key`'s batches.
fn submit_order(
    queues: &HandoffQueues<u8, Arc<Slot>>,
    keys: &[u8],
    applying: &[AtomicUsize; 3],
    max_batch: usize,
) -> Arc<Slot> {
    let slot = Arc::new(Slot {
        taken: AtomicUsize::new(0),
    });
    match queues.push_any(keys, Arc::clone(&slot)) {
        (chosen, Pushed::Lead) => {
            let key = keys[chosen];
            lead(queues, key, &applying[usize::from(key)], max_batch);
        }
        (_, Pushed::Joined) => {}
        (_, Pushed::Full(_) | Pushed::Closed(_)) => panic!("limits and closing not expected in this model"),
    }
    slot
}

fn check_orders(orders: &'static [&'static [u8]], max_batch: usize) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(move || {
        let queues = Arc::new(HandoffQueues::<u8, Arc<Slot>>::new(16, 64, 1, 1));
        let applying = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0), AtomicUsize::new(0)]);
        let handles: Vec<_> = orders
            .iter()
            .map(|keys| {
                let (queues, applying) = (Arc::clone(&queues), Arc::clone(&applying));
                thread::spawn(move || submit_order(&queues, keys, &applying, max_batch))
            })
            .collect();
        let slots: Vec<Arc<Slot>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        for slot in &slots {
            assert_eq!(
                slot.taken.load(Ordering::SeqCst),
                1,
                "an order was lost or taken twice"
            );
        }
        assert_eq!(queues.active_keys(), 0, "leadership left dangling");
        assert_eq!(queues.total_depth(), 0);
    });
}

/// Orders over overlapping SKU sets in opposite orders, and one over the shared SKU alone:
/// whichever queue each joins, every order is taken exactly once, and no key ever has two
/// leaders applying at once.
#[test]
fn orders_over_overlapping_skus_batch_of_two() {
    check_orders(&[&[1, 2], &[2], &[2, 1]], 2);
}

#[test]
fn orders_over_overlapping_skus_batch_of_one() {
    check_orders(&[&[1, 2], &[2, 1], &[1]], 1);
}

/// Two leaders per key: a request arriving while the key has one leader makes its pusher
/// the second, which waits while the first leader's batch is "in the database", then takes
/// what is queued by then (possibly nothing). Every request is taken exactly once, no more
/// than two leaders apply at once, and the key is released when the last leader finds the
/// queue empty.
fn check_pipelined(requests: usize, max_batch: usize) {
    check_with_leaders(requests, max_batch, 2);
}

#[test]
fn pipelined_three_requests_batch_of_one() {
    check_pipelined(3, 1);
}

#[test]
fn pipelined_three_requests_batch_of_two() {
    check_pipelined(3, 2);
}
