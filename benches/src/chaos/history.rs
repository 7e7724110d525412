//! The history of a chaos run: one [`Record`] per HTTP request, in the order they ended,
//! written as JSONL so a failing run can be read and replayed. An *operation* is every
//! request that carried one idempotency key: the original, immediate replays during the
//! load, retries that resolve an ambiguous answer, and replay probes after quiescence.
//!
//! What an answer means follows the outcome contract (docs/api.md) and nothing else:
//! [`Answer::verdict`] is the one place that reads it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use serde::{Deserialize, Serialize};

/// Prefix of every problem `type` the service sends.
const PROBLEM_TYPE_PREFIX: &str = "urn:stockguard:problem:";

/// What an operation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// `POST /v1/skus/{sku}/deduct`.
    Deduct,
    /// `POST /v1/skus/{sku}/restock`.
    Restock,
}

impl OpKind {
    /// The ledger delta a committed operation of `quantity` units writes.
    pub fn delta(self, quantity: i64) -> i64 {
        match self {
            OpKind::Deduct => -quantity,
            OpKind::Restock => quantity,
        }
    }

    /// The ledger `reason` it writes.
    pub fn reason(self) -> &'static str {
        match self {
            OpKind::Deduct => "deduct",
            OpKind::Restock => "restock",
        }
    }
}

/// Why a request was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The first request with this key.
    Original,
    /// An acknowledged key sent again during the load: must replay the first receipt.
    Replay,
    /// A retry with the key of an ambiguous answer, after quiescence.
    Resolve,
    /// An acknowledged key sent again after quiescence: must replay the first receipt.
    Probe,
}

/// Why the client got no HTTP answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransportFailure {
    /// The connection to the service could not be made: nothing was sent.
    NotSent,
    /// The client gave up waiting (its timeout) and abandoned the request.
    Timeout,
    /// The connection broke after the request was (maybe) sent.
    Lost,
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum Answer {
    /// An HTTP response.
    Http {
        /// Status code.
        status: u16,
        /// The problem kind (`type` without its `urn:stockguard:problem:` prefix), if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        problem: Option<String>,
        /// The body as JSON, or as a string when it was not JSON.
        body: serde_json::Value,
    },
    /// No HTTP response.
    Transport {
        /// How it failed.
        failure: TransportFailure,
        /// The client library's message.
        detail: String,
    },
}

/// The receipt fields the checker compares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReceiptView {
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Stock after (`remaining` for a deduction, `stock_after` for a restock).
    pub remaining: i64,
    /// The ledger row.
    pub ledger_id: i64,
    /// True when the service said this is the first receipt again.
    pub replayed: bool,
}

/// What an answer means under the outcome contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx with a receipt: committed exactly once.
    Committed(ReceiptView),
    /// Definitely not applied by this request: a 4xx, a 503 whose kind guarantees that
    /// nothing changed, or a request that never reached the service.
    Refused {
        /// A 4xx: after quiescence, it also proves the key was never applied (the engine
        /// replays a committed key instead of refusing it). A definite 503 proves only that
        /// this request changed nothing.
        conclusive: bool,
    },
    /// The change may or may not have committed: `outcome_unknown`, the HTTP layer's
    /// `request_timeout`, a 500, a client timeout or a connection lost after sending.
    Ambiguous,
    /// An answer the API does not promise (a 2xx without a receipt, an unknown status).
    Unexpected(String),
}

impl Answer {
    /// The HTTP status, if there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Answer::Http { status, .. } => Some(*status),
            Answer::Transport { .. } => None,
        }
    }

    /// A response from its status and raw body.
    pub fn from_http(status: u16, body: &[u8]) -> Self {
        let body: serde_json::Value = serde_json::from_slice(body)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(body).into_owned()));
        let problem = body
            .get("type")
            .and_then(serde_json::Value::as_str)
            .map(|t| t.strip_prefix(PROBLEM_TYPE_PREFIX).unwrap_or(t).to_owned());
        Answer::Http {
            status,
            problem,
            body,
        }
    }

    /// What this answer means (see [`Verdict`]).
    pub fn verdict(&self) -> Verdict {
        match self {
            Answer::Transport {
                failure: TransportFailure::NotSent,
                ..
            } => Verdict::Refused { conclusive: false },
            Answer::Transport { .. } => Verdict::Ambiguous,
            Answer::Http {
                status,
                problem,
                body,
            } => match (*status, problem.as_deref()) {
                (200..=299, _) => match receipt(body) {
                    Some(receipt) => Verdict::Committed(receipt),
                    None => Verdict::Unexpected(format!("HTTP {status} without a receipt")),
                },
                (503, Some("outcome_unknown" | "request_timeout")) | (500, _) => Verdict::Ambiguous,
                (503, Some("unavailable" | "lock_timeout" | "overloaded" | "not_ready")) => {
                    Verdict::Refused { conclusive: false }
                }
                (400..=499, Some(_)) => Verdict::Refused { conclusive: true },
                _ => Verdict::Unexpected(format!("HTTP {status} {}", problem.as_deref().unwrap_or("-"))),
            },
        }
    }
}

fn receipt(body: &serde_json::Value) -> Option<ReceiptView> {
    let int = |name: &str| body.get(name).and_then(serde_json::Value::as_i64);
    Some(ReceiptView {
        sku: body.get("sku")?.as_str()?.to_owned(),
        quantity: int("quantity")?,
        remaining: int("remaining").or_else(|| int("stock_after"))?,
        ledger_id: int("ledger_id")?,
        replayed: body.get("replayed")?.as_bool()?,
    })
}

/// One operation's identity: what every request with its key asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpSpec {
    /// Operation number, unique in the run.
    pub op: u64,
    /// Deduct or restock.
    pub kind: OpKind,
    /// The idempotency key.
    pub key: String,
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
}

/// One HTTP request and what came of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Operation number (one per key).
    pub op: u64,
    /// Deduct or restock.
    pub kind: OpKind,
    /// The idempotency key.
    pub key: String,
    /// The SKU.
    pub sku: String,
    /// Units.
    pub quantity: i64,
    /// Why it was sent.
    pub role: Role,
    /// Which client sent it (the restocker and the resolver have their own numbers).
    pub client: u32,
    /// Sent, in microseconds since the run started.
    pub start_us: u64,
    /// Answered or abandoned, in microseconds since the run started.
    pub end_us: u64,
    /// The client's timeout for this request.
    pub timeout_ms: u64,
    /// What came back.
    #[serde(flatten)]
    pub answer: Answer,
}

impl Record {
    /// The operation this request belongs to.
    pub fn spec(&self) -> OpSpec {
        OpSpec {
            op: self.op,
            kind: self.kind,
            key: self.key.clone(),
            sku: self.sku.clone(),
            quantity: self.quantity,
        }
    }
}

/// Collects records from every task of a run.
#[derive(Debug, Default)]
pub struct Recorder {
    records: Mutex<Vec<Record>>,
    next_op: AtomicU64,
}

impl Recorder {
    /// An empty history.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh operation number.
    pub fn next_op(&self) -> u64 {
        self.next_op.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Appends one record.
    pub fn push(&self, record: Record) {
        self.lock().push(record);
    }

    /// A copy of every record so far.
    pub fn snapshot(&self) -> Vec<Record> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Record>> {
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Every operation's records, in the order they were sent.
pub fn by_key(records: &[Record]) -> BTreeMap<&str, Vec<&Record>> {
    let mut ops: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for record in records {
        ops.entry(record.key.as_str()).or_default().push(record);
    }
    for list in ops.values_mut() {
        list.sort_by_key(|r| (r.start_us, r.end_us));
    }
    ops
}

/// Writes `records` to `path`, one JSON object per line.
pub fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for item in items {
        serde_json::to_writer(&mut out, item)?;
        out.write_all(b"\n")?;
    }
    out.flush().with_context(|| format!("writing {}", path.display()))
}

/// Reads a JSONL history back.
pub fn read_jsonl(path: &Path) -> anyhow::Result<Vec<Record>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(status: u16, body: &str) -> Answer {
        Answer::from_http(status, body.as_bytes())
    }

    #[test]
    fn answers_mean_what_the_outcome_contract_says() {
        let receipt = r#"{"sku":"hot","quantity":2,"remaining":5,"ledger_id":9,"attempts":1,"replayed":false,"lock_wait_us":0,"strategy":"guarded","idempotency_key":"k"}"#;
        assert!(
            matches!(http(200, receipt).verdict(), Verdict::Committed(r) if r.remaining == 5 && r.ledger_id == 9)
        );
        let restock = r#"{"sku":"hot","quantity":4,"stock_after":9,"ledger_id":10,"replayed":true,"idempotency_key":"k"}"#;
        assert!(
            matches!(http(200, restock).verdict(), Verdict::Committed(r) if r.remaining == 9 && r.replayed)
        );
        let problem = |kind: &str| format!(r#"{{"type":"urn:stockguard:problem:{kind}","status":0}}"#);
        assert_eq!(
            http(503, &problem("outcome_unknown")).verdict(),
            Verdict::Ambiguous
        );
        assert_eq!(
            http(503, &problem("request_timeout")).verdict(),
            Verdict::Ambiguous
        );
        assert_eq!(http(500, &problem("internal")).verdict(), Verdict::Ambiguous);
        for kind in ["unavailable", "lock_timeout", "overloaded", "not_ready"] {
            assert_eq!(
                http(503, &problem(kind)).verdict(),
                Verdict::Refused { conclusive: false }
            );
        }
        for (status, kind) in [
            (409, "insufficient_stock"),
            (409, "conflict"),
            (422, "idempotency_key_reused"),
        ] {
            assert_eq!(
                http(status, &problem(kind)).verdict(),
                Verdict::Refused { conclusive: true }
            );
        }
        assert!(matches!(http(200, "{}").verdict(), Verdict::Unexpected(_)));
        assert!(matches!(
            http(502, "bad gateway").verdict(),
            Verdict::Unexpected(_)
        ));
        let transport = |failure| Answer::Transport {
            failure,
            detail: String::new(),
        };
        assert_eq!(
            transport(TransportFailure::NotSent).verdict(),
            Verdict::Refused { conclusive: false }
        );
        assert_eq!(transport(TransportFailure::Timeout).verdict(), Verdict::Ambiguous);
        assert_eq!(transport(TransportFailure::Lost).verdict(), Verdict::Ambiguous);
    }

    #[test]
    fn records_round_trip_through_jsonl() {
        let record = Record {
            op: 1,
            kind: OpKind::Deduct,
            key: "k-1".into(),
            sku: "hot".into(),
            quantity: 2,
            role: Role::Original,
            client: 3,
            start_us: 10,
            end_us: 20,
            timeout_ms: 500,
            answer: http(409, r#"{"type":"urn:stockguard:problem:insufficient_stock"}"#),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        write_jsonl(&path, std::slice::from_ref(&record)).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), vec![record]);
    }
}
