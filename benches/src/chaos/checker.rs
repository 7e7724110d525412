//! The history checker: judges a recorded history against what the database holds after
//! quiescence. Pure: the history and the database state come in as data, so the negative
//! controls can feed it histories that must fail.
//!
//! What it proves, for every SKU and every key (see docs/reliability.md):
//! - stock ≥ 0 (row and buckets), initial + Σ ledger deltas = stock, and no SKU sold more
//!   than it ever had (by the ledger and by the acknowledged answers);
//! - every acknowledged key is in the ledger exactly once, with the receipt's SKU, quantity,
//!   `remaining` and ledger id;
//! - every definite refusal left no ledger row for its key;
//! - every ledger row belongs to an acknowledged or resolved operation;
//! - every replay returned the first receipt;
//! - every ambiguous operation was resolved;
//! - no 500 and no answer the API does not promise.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::history::{OpKind, Record, Role, Verdict, by_key};

/// Examples kept per violation kind.
pub const EXAMPLES_MAX: usize = 5;

/// One SKU as the database holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkuState {
    /// The SKU.
    pub sku: String,
    /// The row's stock.
    pub stock: i64,
    /// Σ stock of its `Sharded` buckets (0 without buckets).
    pub bucket_stock: i64,
    /// The smallest bucket's stock (0 without buckets).
    pub min_bucket_stock: i64,
    /// Stock at creation.
    pub initial_stock: i64,
}

/// One ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LedgerRow {
    /// Row id.
    pub id: i64,
    /// The SKU.
    pub sku: String,
    /// Signed change.
    pub delta: i64,
    /// Stock after the change, as written.
    pub stock_after: i64,
    /// `deduct` or `restock`.
    pub reason: String,
    /// The key of the change, if it had one.
    pub key: Option<String>,
}

/// What the database holds after quiescence.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DbState {
    /// Every SKU.
    pub skus: Vec<SkuState>,
    /// Every ledger row.
    pub ledger: Vec<LedgerRow>,
}

/// The kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViolationKind {
    /// Stock below zero in a row or a bucket.
    NegativeStock,
    /// initial + Σ ledger deltas ≠ stock (row plus buckets).
    Conservation,
    /// More units sold than the SKU ever had (by the ledger, or by the acknowledged answers).
    Oversold,
    /// An acknowledged key with no ledger row.
    AcknowledgedLost,
    /// An acknowledged key with more than one ledger row.
    AppliedTwice,
    /// A receipt that disagrees with its ledger row (SKU, quantity, remaining, id).
    ReceiptMismatch,
    /// A definite refusal whose key is in the ledger.
    RefusalApplied,
    /// A ledger row whose key no acknowledged or resolved operation carries.
    UnexplainedLedgerRow,
    /// A replay that did not return the first receipt.
    ReplayMismatch,
    /// A replay that returned the first receipt but said `replayed: false`, as if it had
    /// applied the change itself (the API promises `replayed: true`).
    ReplayNotMarked,
    /// An ambiguous operation the resolution left open.
    Unresolved,
    /// An HTTP 500.
    ServerError,
    /// An answer the API does not promise.
    UnexpectedAnswer,
    /// The service died without being told to.
    Crash,
    /// `stockguard audit` did not exit 0.
    AuditFailed,
    /// A scheduled fault had no observable effect.
    FaultWithoutEffect,
    /// After quiescence and the reconciler's grace, a gate counter off the database's stock,
    /// or a record still in flight (`+gate` cells).
    GateDrift,
}

/// One example of a violation, with the history of its operation.
#[derive(Debug, Clone, Serialize)]
pub struct Example {
    /// The key, when the violation is about one operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// What is wrong.
    pub detail: String,
    /// Every request of the operation.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Record>,
}

/// Every violation of one kind: the full count and the first few examples.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// The kind.
    pub kind: ViolationKind,
    /// How many.
    pub count: u64,
    /// Up to [`EXAMPLES_MAX`].
    pub examples: Vec<Example>,
}

/// How the operations ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpStats {
    /// Operations (distinct keys).
    pub ops: u64,
    /// … of which restocks.
    pub restocks: u64,
    /// HTTP requests (originals, replays, resolutions, probes).
    pub requests: u64,
    /// Originals answered 2xx.
    pub acknowledged: u64,
    /// Originals answered with a definite refusal (4xx, a definite 503, not sent).
    pub refused: u64,
    /// Originals with an ambiguous answer.
    pub ambiguous: u64,
    /// … resolved as committed.
    pub resolved_committed: u64,
    /// … resolved as never applied.
    pub resolved_not_applied: u64,
    /// … left open.
    pub unresolved: u64,
    /// Ambiguous originals that were `outcome_unknown` answers.
    pub outcome_unknown: u64,
    /// … that were client timeouts (abandoned requests).
    pub client_timeouts: u64,
    /// … that were lost connections.
    pub lost_connections: u64,
    /// `request_timeout` answers (the docs say the engine answers first).
    pub request_timeouts: u64,
    /// Replays and probes sent.
    pub replays: u64,
    /// Units acknowledged as deducted (first receipts).
    pub units_deducted: i64,
}

/// The checker's verdict on one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Findings {
    /// How the operations ended.
    pub stats: OpStats,
    /// Violations, by kind.
    pub violations: Vec<Violation>,
}

impl Findings {
    /// Total violations.
    pub fn violation_count(&self) -> u64 {
        self.violations.iter().map(|v| v.count).sum()
    }

    /// How many violations of `kind`.
    pub fn count(&self, kind: ViolationKind) -> u64 {
        self.violations
            .iter()
            .filter(|v| v.kind == kind)
            .map(|v| v.count)
            .sum()
    }

    /// Adds one violation of `kind` (the runner's own: crashes, faults, the audit).
    pub fn add(&mut self, kind: ViolationKind, example: Example) {
        let mut tally = Tally::default();
        tally.flag(kind, example);
        self.merge(tally);
    }

    fn merge(&mut self, tally: Tally) {
        for (kind, (count, examples)) in tally.0 {
            match self.violations.iter_mut().find(|v| v.kind == kind) {
                Some(existing) => {
                    existing.count += count;
                    let room = EXAMPLES_MAX.saturating_sub(existing.examples.len());
                    existing.examples.extend(examples.into_iter().take(room));
                }
                None => self.violations.push(Violation {
                    kind,
                    count,
                    examples,
                }),
            }
        }
        self.violations.sort_by_key(|v| v.kind);
    }
}

#[derive(Default)]
struct Tally(BTreeMap<ViolationKind, (u64, Vec<Example>)>);

impl Tally {
    fn flag(&mut self, kind: ViolationKind, example: Example) {
        let (count, examples) = self.0.entry(kind).or_default();
        *count += 1;
        if examples.len() < EXAMPLES_MAX {
            examples.push(example);
        }
    }

    fn op(&mut self, kind: ViolationKind, records: &[&Record], detail: String) {
        self.flag(
            kind,
            Example {
                key: records.first().map(|r| r.key.clone()),
                detail,
                history: records.iter().map(|r| (*r).clone()).collect(),
            },
        );
    }
}

/// How one operation ended, by its answers alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Committed,
    Refused,
    ResolvedNotApplied,
    Unresolved,
}

/// Judges `records` against `db`.
pub fn check(records: &[Record], db: &DbState) -> Findings {
    let mut tally = Tally::default();
    let mut stats = OpStats {
        requests: records.len() as u64,
        ..OpStats::default()
    };
    let mut ledger_by_key: HashMap<&str, Vec<&LedgerRow>> = HashMap::new();
    let mut unkeyed = Vec::new();
    for row in &db.ledger {
        match &row.key {
            Some(key) => ledger_by_key.entry(key.as_str()).or_default().push(row),
            None => unkeyed.push(row),
        }
    }
    let mut ends: HashMap<&str, End> = HashMap::new();
    // Σ deltas the answers vouch for, per SKU: committed operations only.
    let mut acknowledged_delta: HashMap<&str, i64> = HashMap::new();
    for (key, ops) in by_key(records) {
        let rows = ledger_by_key.get(key).map(Vec::as_slice).unwrap_or_default();
        let end = check_op(&ops, rows, &mut tally, &mut stats);
        if end == End::Committed {
            let first = ops[0];
            *acknowledged_delta.entry(first.sku.as_str()).or_default() += first.kind.delta(first.quantity);
        }
        ends.insert(key, end);
    }
    for row in &db.ledger {
        let explained = row
            .key
            .as_deref()
            .and_then(|key| ends.get(key))
            .is_some_and(|end| matches!(end, End::Committed | End::Refused | End::ResolvedNotApplied));
        if !explained {
            tally.flag(
                ViolationKind::UnexplainedLedgerRow,
                Example {
                    key: row.key.clone(),
                    detail: format!(
                        "ledger row {} ({} {:+} on {}) has {} acknowledged or resolved operation",
                        row.id,
                        row.reason,
                        row.delta,
                        row.sku,
                        if row.key.is_none() { "no key, so no" } else { "no" }
                    ),
                    history: Vec::new(),
                },
            );
        }
    }
    check_skus(db, &acknowledged_delta, &mut tally);
    let mut findings = Findings {
        stats,
        violations: Vec::new(),
    };
    findings.merge(tally);
    findings
}

fn check_op(ops: &[&Record], rows: &[&LedgerRow], tally: &mut Tally, stats: &mut OpStats) -> End {
    stats.ops += 1;
    let first = ops[0];
    if first.kind == OpKind::Restock {
        stats.restocks += 1;
    }
    let mut acks = Vec::new();
    for record in ops {
        let verdict = record.answer.verdict();
        match &verdict {
            Verdict::Committed(receipt) => acks.push((*record, receipt.clone())),
            Verdict::Unexpected(what) => {
                tally.op(ViolationKind::UnexpectedAnswer, ops, what.clone());
            }
            _ => {}
        }
        if record.answer.status() == Some(500) {
            tally.op(ViolationKind::ServerError, ops, "HTTP 500".into());
        }
        if matches!(&record.answer, super::history::Answer::Http { problem: Some(p), .. } if p == "request_timeout")
        {
            stats.request_timeouts += 1;
        }
        if matches!(record.role, Role::Replay | Role::Probe) {
            stats.replays += 1;
            if matches!(verdict, Verdict::Refused { conclusive: true }) {
                tally.op(
                    ViolationKind::ReplayMismatch,
                    ops,
                    "a replay of an acknowledged key was refused (4xx) instead of replaying".into(),
                );
            }
        }
    }
    let original = first.answer.verdict();
    match &original {
        Verdict::Committed(_) => stats.acknowledged += 1,
        Verdict::Refused { .. } => stats.refused += 1,
        Verdict::Ambiguous | Verdict::Unexpected(_) => {
            stats.ambiguous += 1;
            match &first.answer {
                super::history::Answer::Http { problem: Some(p), .. } if p == "outcome_unknown" => {
                    stats.outcome_unknown += 1;
                }
                super::history::Answer::Transport { failure, .. } => match failure {
                    super::history::TransportFailure::Timeout => stats.client_timeouts += 1,
                    _ => stats.lost_connections += 1,
                },
                _ => {}
            }
        }
    }
    if rows.len() > 1 {
        tally.op(
            ViolationKind::AppliedTwice,
            ops,
            format!("{} ledger rows carry this key", rows.len()),
        );
    }
    let row = rows.first();
    if let Verdict::Refused { .. } = original {
        if row.is_some() {
            tally.op(
                ViolationKind::RefusalApplied,
                ops,
                format!(
                    "answered as definitely not applied ({}), but ledger row {} carries the key",
                    describe(first),
                    row.map_or(0, |r| r.id)
                ),
            );
        }
        return End::Refused;
    }
    if !acks.is_empty() {
        if !matches!(original, Verdict::Committed(_)) {
            stats.resolved_committed += 1;
        }
        check_receipts(ops, &acks, row.copied(), tally, stats);
        return End::Committed;
    }
    // Ambiguous originals: the last resolution's answer decides, when it is conclusive.
    let conclusive = ops
        .iter()
        .rev()
        .find(|r| r.role == Role::Resolve)
        .is_some_and(|r| r.answer.verdict() == Verdict::Refused { conclusive: true });
    if conclusive {
        stats.resolved_not_applied += 1;
        if let Some(row) = row {
            tally.op(
                ViolationKind::RefusalApplied,
                ops,
                format!(
                    "resolved as never applied (4xx on retry), but ledger row {} carries the key",
                    row.id
                ),
            );
        }
        return End::ResolvedNotApplied;
    }
    stats.unresolved += 1;
    tally.op(
        ViolationKind::Unresolved,
        ops,
        format!(
            "no answer settled it; the ledger {} the key",
            if row.is_some() { "has" } else { "does not have" }
        ),
    );
    End::Unresolved
}

/// A committed operation: its ledger row must match the first receipt, and every later
/// receipt must be that one again.
fn check_receipts(
    ops: &[&Record],
    acks: &[(&Record, super::history::ReceiptView)],
    row: Option<&LedgerRow>,
    tally: &mut Tally,
    stats: &mut OpStats,
) {
    let first = ops[0];
    let Some(row) = row else {
        tally.op(
            ViolationKind::AcknowledgedLost,
            ops,
            "acknowledged (2xx), but no ledger row carries the key".into(),
        );
        return;
    };
    if first.kind == OpKind::Deduct {
        stats.units_deducted += first.quantity;
    }
    if row.sku != first.sku
        || row.delta != first.kind.delta(first.quantity)
        || row.reason != first.kind.reason()
    {
        tally.op(
            ViolationKind::ReceiptMismatch,
            ops,
            format!(
                "ledger row {} is {} {:+} on {}, the request was {} {} on {}",
                row.id,
                row.reason,
                row.delta,
                row.sku,
                first.kind.reason(),
                first.quantity,
                first.sku
            ),
        );
    }
    let fresh = acks.iter().filter(|(_, receipt)| !receipt.replayed).count();
    if fresh > 1 {
        tally.op(
            ViolationKind::ReplayNotMarked,
            ops,
            format!(
                "{fresh} receipts say they applied the change (replayed: false) for one ledger row: a \
                 replay was answered as if it had applied the change"
            ),
        );
    }
    for (index, (record, receipt)) in acks.iter().enumerate() {
        let matches = receipt.sku == row.sku
            && receipt.quantity == first.quantity
            && receipt.ledger_id == row.id
            && receipt.remaining == row.stock_after;
        if matches {
            continue;
        }
        let kind = if index == 0 && record.role != Role::Replay && record.role != Role::Probe {
            ViolationKind::ReceiptMismatch
        } else {
            ViolationKind::ReplayMismatch
        };
        tally.op(
            kind,
            ops,
            format!(
                "receipt ({:?}) says ledger {} remaining {} × {}, the ledger row is {} with stock_after {}",
                record.role, receipt.ledger_id, receipt.remaining, receipt.quantity, row.id, row.stock_after
            ),
        );
    }
}

fn check_skus(db: &DbState, acknowledged_delta: &HashMap<&str, i64>, tally: &mut Tally) {
    let mut ledger_sum: HashMap<&str, i64> = HashMap::new();
    for row in &db.ledger {
        *ledger_sum.entry(row.sku.as_str()).or_default() += row.delta;
    }
    for sku in &db.skus {
        let example = |detail: String| Example {
            key: None,
            detail: format!("{}: {detail}", sku.sku),
            history: Vec::new(),
        };
        if sku.stock < 0 || sku.min_bucket_stock < 0 {
            tally.flag(
                ViolationKind::NegativeStock,
                example(format!(
                    "stock {} (smallest bucket {})",
                    sku.stock, sku.min_bucket_stock
                )),
            );
        }
        let sum = ledger_sum.get(sku.sku.as_str()).copied().unwrap_or(0);
        let total = sku.stock + sku.bucket_stock;
        if sku.initial_stock + sum != total {
            tally.flag(
                ViolationKind::Conservation,
                example(format!(
                    "initial {} + Σ ledger deltas {sum} = {}, but the stock is {total} (row {} + buckets {})",
                    sku.initial_stock,
                    sku.initial_stock + sum,
                    sku.stock,
                    sku.bucket_stock
                )),
            );
        }
        let acknowledged = acknowledged_delta.get(sku.sku.as_str()).copied().unwrap_or(0);
        if sku.initial_stock + sum < 0 || sku.initial_stock + acknowledged < 0 {
            tally.flag(
                ViolationKind::Oversold,
                example(format!(
                    "initial {} + Σ ledger deltas {sum} = {}; initial + Σ acknowledged changes {acknowledged} = {}",
                    sku.initial_stock,
                    sku.initial_stock + sum,
                    sku.initial_stock + acknowledged
                )),
            );
        }
    }
}

fn describe(record: &Record) -> String {
    match &record.answer {
        super::history::Answer::Http { status, problem, .. } => {
            format!("HTTP {status} {}", problem.as_deref().unwrap_or(""))
        }
        super::history::Answer::Transport { failure, .. } => format!("{failure:?}"),
    }
}

#[cfg(test)]
#[path = "checker_tests.rs"]
mod tests;
