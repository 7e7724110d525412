//! Negative controls: ways to make a history wrong on purpose, so that a test can show the
//! checker notices. A checker that cannot fail proves nothing.

use super::history::{Answer, Record, Role, Verdict};

/// The mutant of the issue: lost answers reported as "nothing changed". Given an answer that
/// leaves the outcome open (`outcome_unknown`, a lost connection, a client timeout), it
/// returns the lie a service that answers a lost COMMIT with a definite refusal (or a client
/// that takes a timeout for "not sold") would tell: `503 unavailable`. Other answers pass
/// unchanged. Since the engine resolves most lost COMMITs itself, client timeouts are where
/// such lies mostly show.
pub fn mutant_answer(answer: Answer) -> Answer {
    if answer.verdict() == Verdict::Ambiguous {
        unavailable("mutant: a lost answer reported as nothing changed")
    } else {
        answer
    }
}

/// Rewrites the first answer of every `every`-th committed operation (acknowledged with
/// 2xx) as a definite refusal, alternating `409 insufficient_stock` and `503 unavailable`,
/// and drops the operation's replays (a client told "not sold" would not replay). Returns
/// how many operations were rewritten; each one committed, so each must be flagged.
pub fn refuse_committed(records: &mut Vec<Record>, every: usize) -> usize {
    let every = every.max(1);
    let mut rewritten = std::collections::HashSet::new();
    let mut seen = 0usize;
    for record in records.iter_mut() {
        if record.role != Role::Original || !matches!(record.answer.verdict(), Verdict::Committed(_)) {
            continue;
        }
        seen += 1;
        if !seen.is_multiple_of(every) {
            continue;
        }
        record.answer = if rewritten.len() % 2 == 0 {
            Answer::from_http(
                409,
                br#"{"type":"urn:stockguard:problem:insufficient_stock","title":"Insufficient stock","status":409,"detail":"negative control"}"#,
            )
        } else {
            unavailable("negative control")
        };
        rewritten.insert(record.key.clone());
    }
    records.retain(|r| r.role == Role::Original || !rewritten.contains(&r.key));
    rewritten.len()
}

fn unavailable(detail: &str) -> Answer {
    let body = serde_json::json!({
        "type": "urn:stockguard:problem:unavailable",
        "title": "Service unavailable",
        "status": 503,
        "detail": format!("{detail}; nothing was changed, retry later"),
    });
    Answer::from_http(503, body.to_string().as_bytes())
}
