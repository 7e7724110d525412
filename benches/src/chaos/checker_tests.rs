//! The checker on synthetic histories: a clean one passes, and each kind of lie is caught.

use super::*;
use crate::chaos::controls::refuse_committed;
use crate::chaos::history::{Answer, OpKind, Record, Role, TransportFailure};

/// A tiny consistent world: applies operations to a database state and records what a
/// truthful service would have answered.
struct World {
    records: Vec<Record>,
    db: DbState,
    clock_us: u64,
}

impl World {
    fn new(skus: &[(&str, i64)]) -> Self {
        Self {
            records: Vec::new(),
            db: DbState {
                skus: skus
                    .iter()
                    .map(|(sku, stock)| SkuState {
                        sku: (*sku).to_owned(),
                        stock: *stock,
                        bucket_stock: 0,
                        min_bucket_stock: 0,
                        initial_stock: *stock,
                    })
                    .collect(),
                ledger: Vec::new(),
            },
            clock_us: 0,
        }
    }

    /// Applies the change if it fits; returns its ledger id and stock after.
    fn apply(&mut self, kind: OpKind, key: &str, sku: &str, quantity: i64) -> Option<(i64, i64)> {
        let state = self.db.skus.iter_mut().find(|s| s.sku == sku)?;
        let delta = kind.delta(quantity);
        if state.stock + delta < 0 {
            return None;
        }
        state.stock += delta;
        let id = i64::try_from(self.db.ledger.len()).unwrap() + 1;
        self.db.ledger.push(LedgerRow {
            id,
            sku: sku.to_owned(),
            delta,
            stock_after: state.stock,
            reason: kind.reason().to_owned(),
            key: Some(key.to_owned()),
        });
        Some((id, state.stock))
    }

    fn record(&mut self, key: &str, kind: OpKind, sku: &str, quantity: i64, role: Role, answer: Answer) {
        self.clock_us += 10;
        let op = self
            .records
            .iter()
            .find(|r| r.key == key)
            .map_or(self.records.len() as u64 + 1, |r| r.op);
        self.records.push(Record {
            op,
            kind,
            key: key.to_owned(),
            sku: sku.to_owned(),
            quantity,
            role,
            client: 0,
            start_us: self.clock_us,
            end_us: self.clock_us + 5,
            timeout_ms: 1000,
            answer,
        });
    }

    /// A truthful deduction: 200 with the receipt, or 409.
    fn deduct(&mut self, key: &str, sku: &str, quantity: i64) -> Option<(i64, i64)> {
        let applied = self.apply(OpKind::Deduct, key, sku, quantity);
        let answer = match applied {
            Some((id, remaining)) => receipt(sku, quantity, id, remaining, false),
            None => problem(409, "insufficient_stock"),
        };
        self.record(key, OpKind::Deduct, sku, quantity, Role::Original, answer);
        applied
    }

    /// A deduction whose answer was lost (`applied` decides whether it committed), then
    /// resolved by a retry with its key.
    fn lost_then_resolved(&mut self, key: &str, sku: &str, quantity: i64, applied: bool) {
        let committed = if applied {
            self.apply(OpKind::Deduct, key, sku, quantity)
        } else {
            None
        };
        self.record(
            key,
            OpKind::Deduct,
            sku,
            quantity,
            Role::Original,
            problem(503, "outcome_unknown"),
        );
        let answer = match committed {
            Some((id, remaining)) => receipt(sku, quantity, id, remaining, true),
            None => problem(409, "insufficient_stock"),
        };
        self.record(key, OpKind::Deduct, sku, quantity, Role::Resolve, answer);
    }

    fn check(&self) -> Findings {
        check(&self.records, &self.db)
    }
}

fn receipt(sku: &str, quantity: i64, id: i64, remaining: i64, replayed: bool) -> Answer {
    let body = serde_json::json!({
        "sku": sku, "quantity": quantity, "remaining": remaining, "ledger_id": id,
        "attempts": 1, "replayed": replayed, "lock_wait_us": 0, "strategy": "guarded",
        "idempotency_key": "k",
    });
    Answer::from_http(200, body.to_string().as_bytes())
}

fn problem(status: u16, kind: &str) -> Answer {
    let body = serde_json::json!({ "type": format!("urn:stockguard:problem:{kind}"), "status": status });
    Answer::from_http(status, body.to_string().as_bytes())
}

/// A busy, truthful world: sales, sell-outs, a restock, replays, and lost answers that
/// committed and that did not.
fn clean_world() -> World {
    let mut world = World::new(&[("hot", 5), ("cold", 2)]);
    let (id, remaining) = world.deduct("d1", "hot", 2).unwrap();
    world.record(
        "d1",
        OpKind::Deduct,
        "hot",
        2,
        Role::Replay,
        receipt("hot", 2, id, remaining, true),
    );
    world.deduct("d2", "hot", 3).unwrap();
    assert!(world.deduct("d3", "hot", 1).is_none());
    world.lost_then_resolved("d4", "cold", 1, true);
    world.lost_then_resolved("d5", "cold", 3, false);
    let (id, stock_after) = world.apply(OpKind::Restock, "r1", "hot", 4).unwrap();
    let body = serde_json::json!({"sku": "hot", "quantity": 4, "stock_after": stock_after, "ledger_id": id, "replayed": false, "idempotency_key": "r1"});
    world.record(
        "r1",
        OpKind::Restock,
        "hot",
        4,
        Role::Original,
        Answer::from_http(200, body.to_string().as_bytes()),
    );
    world.record(
        "d6",
        OpKind::Deduct,
        "cold",
        1,
        Role::Original,
        Answer::Transport {
            failure: TransportFailure::NotSent,
            detail: "connection refused".into(),
        },
    );
    world.record(
        "d7",
        OpKind::Deduct,
        "cold",
        1,
        Role::Original,
        problem(503, "unavailable"),
    );
    world
}

#[test]
fn a_truthful_history_passes_with_its_outcomes_counted() {
    let findings = clean_world().check();
    assert_eq!(findings.violation_count(), 0, "{:#?}", findings.violations);
    let stats = findings.stats;
    assert_eq!(stats.ops, 8);
    assert_eq!(stats.restocks, 1);
    assert_eq!(stats.acknowledged, 3);
    assert_eq!(stats.refused, 3);
    assert_eq!((stats.ambiguous, stats.outcome_unknown), (2, 2));
    assert_eq!(
        (
            stats.resolved_committed,
            stats.resolved_not_applied,
            stats.unresolved
        ),
        (1, 1, 0)
    );
    assert_eq!(stats.replays, 1);
    assert_eq!(stats.units_deducted, 6);
}

#[test]
fn negative_control_a_committed_change_answered_as_refused_is_caught() {
    let mut world = World::new(&[("hot", 100)]);
    for n in 0..20 {
        world.deduct(&format!("k{n}"), "hot", 1 + n % 3);
    }
    let rewritten = refuse_committed(&mut world.records, 3);
    assert_eq!(rewritten, 6);
    let findings = world.check();
    assert_eq!(
        findings.count(ViolationKind::RefusalApplied),
        6,
        "{:#?}",
        findings.violations
    );
    assert_eq!(findings.violation_count(), 6);
    let example = &findings.violations[0].examples[0];
    assert!(
        example.detail.contains("definitely not applied"),
        "{}",
        example.detail
    );
    assert!(!example.history.is_empty());
}

#[test]
fn negative_control_an_unlocked_read_modify_write_is_caught() {
    // Two requests read stock 3 at the same time, both pass the check and both write
    // 3 − 2 = 1: both are acknowledged and logged, the stock lost one update.
    let mut world = World::new(&[("hot", 3)]);
    for (key, id) in [("u1", 1), ("u2", 2)] {
        world.db.ledger.push(LedgerRow {
            id,
            sku: "hot".into(),
            delta: -2,
            stock_after: 1,
            reason: "deduct".into(),
            key: Some(key.into()),
        });
        world.record(
            key,
            OpKind::Deduct,
            "hot",
            2,
            Role::Original,
            receipt("hot", 2, id, 1, false),
        );
    }
    world.db.skus[0].stock = 1;
    let findings = world.check();
    assert_eq!(
        findings.count(ViolationKind::Conservation),
        1,
        "{:#?}",
        findings.violations
    );
    assert_eq!(findings.count(ViolationKind::Oversold), 1);
}

#[test]
fn a_lost_acknowledgement_a_double_apply_and_an_unexplained_row_are_caught() {
    let mut world = clean_world();
    // d1 acknowledged, its row gone (and the stock put back so conservation still holds).
    let row = world
        .db
        .ledger
        .iter()
        .position(|r| r.key.as_deref() == Some("d1"))
        .unwrap();
    let lost = world.db.ledger.remove(row);
    world.db.skus[0].stock -= lost.delta;
    let findings = world.check();
    assert_eq!(
        findings.count(ViolationKind::AcknowledgedLost),
        1,
        "{:#?}",
        findings.violations
    );

    let mut world = clean_world();
    let mut twice = world.db.ledger[0].clone();
    twice.id = 99;
    world.db.ledger.push(twice);
    world.db.skus[0].stock -= 2;
    assert_eq!(world.check().count(ViolationKind::AppliedTwice), 1);

    let mut world = clean_world();
    for key in [None, Some("nobody-sent-this".to_owned())] {
        world.db.ledger.push(LedgerRow {
            id: 50,
            sku: "hot".into(),
            delta: -1,
            stock_after: 0,
            reason: "deduct".into(),
            key,
        });
        world.db.skus[0].stock -= 1;
    }
    assert_eq!(world.check().count(ViolationKind::UnexplainedLedgerRow), 2);
}

#[test]
fn replays_must_return_the_first_receipt() {
    let mut world = clean_world();
    let (id, remaining) = world.deduct("d9", "hot", 1).unwrap();
    world.record(
        "d9",
        OpKind::Deduct,
        "hot",
        1,
        Role::Probe,
        receipt("hot", 1, id + 1, remaining, true),
    );
    world.record(
        "d9",
        OpKind::Deduct,
        "hot",
        1,
        Role::Probe,
        receipt("hot", 1, id, remaining, false),
    );
    world.record(
        "d9",
        OpKind::Deduct,
        "hot",
        1,
        Role::Probe,
        problem(409, "insufficient_stock"),
    );
    let findings = world.check();
    // A different ledger id and a refusal instead of a replay; a second "first" receipt.
    assert_eq!(
        findings.count(ViolationKind::ReplayMismatch),
        2,
        "{:#?}",
        findings.violations
    );
    assert_eq!(findings.count(ViolationKind::ReplayNotMarked), 1);
}

#[test]
fn open_ambiguity_a_500_and_a_refused_resolution_with_a_row_are_caught() {
    let mut world = clean_world();
    world.record(
        "a1",
        OpKind::Deduct,
        "cold",
        1,
        Role::Original,
        problem(503, "outcome_unknown"),
    );
    world.record(
        "a1",
        OpKind::Deduct,
        "cold",
        1,
        Role::Resolve,
        problem(503, "unavailable"),
    );
    world.record(
        "a2",
        OpKind::Deduct,
        "cold",
        1,
        Role::Original,
        problem(500, "internal"),
    );
    let (id, _) = world.apply(OpKind::Deduct, "a2", "cold", 1).unwrap();
    world.record(
        "a2",
        OpKind::Deduct,
        "cold",
        1,
        Role::Resolve,
        receipt("cold", 1, id, 0, true),
    );
    world.apply(OpKind::Deduct, "a3", "hot", 1).unwrap();
    world.record(
        "a3",
        OpKind::Deduct,
        "hot",
        1,
        Role::Original,
        problem(503, "outcome_unknown"),
    );
    world.record(
        "a3",
        OpKind::Deduct,
        "hot",
        1,
        Role::Resolve,
        problem(409, "insufficient_stock"),
    );
    let findings = world.check();
    assert_eq!(
        findings.count(ViolationKind::Unresolved),
        1,
        "{:#?}",
        findings.violations
    );
    assert_eq!(findings.count(ViolationKind::ServerError), 1);
    assert_eq!(findings.count(ViolationKind::RefusalApplied), 1);
    assert_eq!(findings.stats.resolved_committed, 2);
}

#[test]
fn negative_stock_is_caught_and_examples_are_bounded() {
    let mut world = World::new(&[]);
    for n in 0..8 {
        world.db.skus.push(SkuState {
            sku: format!("s{n}"),
            stock: -1,
            bucket_stock: 0,
            min_bucket_stock: 0,
            initial_stock: -1,
        });
    }
    let findings = world.check();
    assert_eq!(findings.count(ViolationKind::NegativeStock), 8);
    let negative = findings
        .violations
        .iter()
        .find(|v| v.kind == ViolationKind::NegativeStock)
        .unwrap();
    assert_eq!(negative.examples.len(), EXAMPLES_MAX);
}
