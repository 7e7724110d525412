//! What a deduction's HTTP response means for the tally: the same outcomes the in-process
//! path reads from `DeductError`, and anything the API does not promise is flagged.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use stockguard_core::Strategy;

use crate::tally::Outcome;

/// Longest response body quoted in a diagnostic.
const QUOTED_BODY_CHARS_MAX: usize = 300;

/// What one request asked for, to check the answer against.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The SKU in the URL.
    pub sku: &'a str,
    /// Units in the body.
    pub units: u32,
    /// Strategy in the body.
    pub strategy: Strategy,
    /// The Idempotency-Key header, if the request sent one.
    pub key: Option<&'a str>,
}

/// A response the API does not promise for a deduction; the request counts as
/// `http_unexpected`, which fails the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnexpectedResponse {
    /// HTTP status.
    pub status: u16,
    /// What was wrong.
    pub reason: String,
    /// The start of the body, for the diagnostic.
    pub body_start: String,
}

impl fmt::Display for UnexpectedResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "HTTP {}: {}; body: {}",
            self.status, self.reason, self.body_start
        )
    }
}

impl std::error::Error for UnexpectedResponse {}

/// The receipt fields the tally needs or checks (the rest are ignored).
#[derive(Debug, Deserialize)]
struct ReceiptBody<'a> {
    #[serde(borrow)]
    sku: Cow<'a, str>,
    quantity: i64,
    remaining: i64,
    attempts: u32,
    replayed: bool,
    lock_wait_us: u64,
    #[serde(borrow)]
    strategy: Cow<'a, str>,
    #[serde(borrow)]
    idempotency_key: Cow<'a, str>,
}

/// The problem-document fields the tally needs.
#[derive(Debug, Deserialize)]
struct ProblemBody<'a> {
    #[serde(rename = "type", borrow)]
    problem_type: Cow<'a, str>,
    requested: Option<i64>,
    attempts: Option<u32>,
}

/// Prefix of every problem `type` the service sends.
const PROBLEM_TYPE_PREFIX: &str = "urn:stockguard:problem:";

/// Maps one deduction response to the tally's outcome, exactly as the in-process path maps
/// `DeductError`s:
///
/// | status | body | outcome |
/// |---|---|---|
/// | 200 | receipt for this SKU, quantity, strategy and key, not replayed | success with the receipt's attempts and lock wait |
/// | 200 | the same, replayed, for a request that sent a key | replayed (the drive checks that it was a retry) |
/// | 409 | `insufficient_stock` for the requested quantity | refused |
/// | 409 | `conflict` with `attempts` | error `conflict` (its attempts count as failed) |
/// | 503 | `lock_timeout`, `unavailable`, `overloaded`, `request_timeout` | error of that kind |
/// | 500 | `internal` | error `internal` (fails the run) |
/// | anything else | | `Err`: counted as `http_unexpected` (fails the run) |
pub fn classify_response(
    status: u16,
    body: &[u8],
    expected: &Expected<'_>,
) -> Result<Outcome, UnexpectedResponse> {
    let unexpected = |reason: String| UnexpectedResponse {
        status,
        reason,
        body_start: String::from_utf8_lossy(body)
            .chars()
            .take(QUOTED_BODY_CHARS_MAX)
            .collect(),
    };
    match status {
        200 => {
            let receipt: ReceiptBody<'_> = serde_json::from_slice(body)
                .map_err(|error| unexpected(format!("not a deduct receipt: {error}")))?;
            if receipt.sku != expected.sku
                || receipt.quantity != i64::from(expected.units)
                || receipt.strategy != expected.strategy.as_str()
            {
                return Err(unexpected(format!(
                    "receipt for {} × {} by {}, but the request was {} × {} by {}",
                    receipt.sku,
                    receipt.quantity,
                    receipt.strategy,
                    expected.sku,
                    expected.units,
                    expected.strategy
                )));
            }
            if let Some(key) = expected.key
                && receipt.idempotency_key != key
            {
                return Err(unexpected(format!(
                    "receipt under key {:?}, but the request sent {key:?}",
                    receipt.idempotency_key
                )));
            }
            // Only a key the client sent can have been seen before.
            if receipt.replayed && expected.key.is_none() {
                return Err(unexpected(
                    "a replayed receipt without an Idempotency-Key".to_owned(),
                ));
            }
            if receipt.attempts == 0 || receipt.remaining < 0 {
                return Err(unexpected(format!(
                    "impossible receipt: attempts {}, remaining {}",
                    receipt.attempts, receipt.remaining
                )));
            }
            if receipt.replayed {
                return Ok(Outcome::Replayed);
            }
            Ok(Outcome::Success {
                attempts: receipt.attempts,
                lock_wait_us: receipt.lock_wait_us,
            })
        }
        409 | 500 | 503 => {
            let problem: ProblemBody<'_> = serde_json::from_slice(body)
                .map_err(|error| unexpected(format!("not a problem document: {error}")))?;
            let kind = problem
                .problem_type
                .strip_prefix(PROBLEM_TYPE_PREFIX)
                .ok_or_else(|| unexpected(format!("unknown problem type {:?}", problem.problem_type)))?;
            match (status, kind) {
                (409, "insufficient_stock") if problem.requested == Some(i64::from(expected.units)) => {
                    Ok(Outcome::Refused)
                }
                (409, "conflict") => match problem.attempts {
                    Some(attempts) if attempts > 0 => Ok(Outcome::Error {
                        kind: "conflict",
                        attempts,
                    }),
                    _ => Err(unexpected("a conflict without its attempts".to_owned())),
                },
                (503, "lock_timeout") => Ok(error_kind("lock_timeout")),
                (503, "unavailable") => Ok(error_kind("unavailable")),
                (503, "overloaded") => Ok(error_kind("overloaded")),
                (503, "request_timeout") => Ok(error_kind("request_timeout")),
                (500, "internal") => Ok(error_kind("internal")),
                _ => Err(unexpected(format!("problem {kind:?} is not a deduction outcome"))),
            }
        }
        _ => Err(unexpected("not a status a deduction answers with".to_owned())),
    }
}

pub(super) fn error_kind(kind: &'static str) -> Outcome {
    Outcome::Error { kind, attempts: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Expected<'static> = Expected {
        sku: "bench-0000007",
        units: 2,
        strategy: Strategy::Guarded,
        key: None,
    };

    fn receipt(sku: &str, quantity: i64, strategy: &str, replayed: bool) -> String {
        format!(
            r#"{{"sku":"{sku}","quantity":{quantity},"remaining":40,"ledger_id":9,"attempts":3,"replayed":{replayed},"lock_wait_us":1234,"strategy":"{strategy}","idempotency_key":"k-1"}}"#
        )
    }

    fn problem(kind: &str, status: u16, extra: &str) -> String {
        format!(
            r#"{{"type":"urn:stockguard:problem:{kind}","title":"t","status":{status},"detail":"d"{extra}}}"#
        )
    }

    fn classify(status: u16, body: &str) -> Result<Outcome, UnexpectedResponse> {
        classify_response(status, body.as_bytes(), &EXPECTED)
    }

    #[test]
    fn a_matching_receipt_is_a_success_with_its_attempts_and_lock_wait() {
        assert_eq!(
            classify(200, &receipt("bench-0000007", 2, "guarded", false)),
            Ok(Outcome::Success {
                attempts: 3,
                lock_wait_us: 1234
            })
        );
    }

    #[test]
    fn a_keyed_request_may_be_replayed_but_only_under_its_own_key() {
        let keyed = Expected {
            key: Some("k-1"),
            ..EXPECTED
        };
        let replayed = receipt("bench-0000007", 2, "guarded", true);
        assert_eq!(
            classify_response(200, replayed.as_bytes(), &keyed),
            Ok(Outcome::Replayed)
        );
        let fresh = receipt("bench-0000007", 2, "guarded", false);
        assert!(matches!(
            classify_response(200, fresh.as_bytes(), &keyed),
            Ok(Outcome::Success { .. })
        ));
        let other_key = Expected {
            key: Some("k-2"),
            ..EXPECTED
        };
        assert!(classify_response(200, fresh.as_bytes(), &other_key).is_err());
    }

    #[test]
    fn a_receipt_for_something_else_is_unexpected() {
        for body in [
            receipt("bench-0000008", 2, "guarded", false),
            receipt("bench-0000007", 1, "guarded", false),
            receipt("bench-0000007", 2, "pessimistic", false),
            receipt("bench-0000007", 2, "guarded", true),
            receipt("bench-0000007", 2, "guarded", false).replace(r#""attempts":3"#, r#""attempts":0"#),
            receipt("bench-0000007", 2, "guarded", false).replace(r#""remaining":40"#, r#""remaining":-1"#),
            r#"{"sku":"bench-0000007"}"#.to_owned(),
            "<html>ok</html>".to_owned(),
            String::new(),
        ] {
            let error = classify(200, &body).expect_err(&body);
            assert_eq!(error.status, 200);
        }
    }

    #[test]
    fn insufficient_stock_for_the_requested_quantity_is_a_refusal() {
        let body = problem("insufficient_stock", 409, r#","available":1,"requested":2"#);
        assert_eq!(classify(409, &body), Ok(Outcome::Refused));
        let other_quantity = problem("insufficient_stock", 409, r#","available":1,"requested":5"#);
        assert!(classify(409, &other_quantity).is_err());
        let no_quantity = problem("insufficient_stock", 409, "");
        assert!(classify(409, &no_quantity).is_err());
    }

    #[test]
    fn a_conflict_keeps_its_attempts() {
        let body = problem("conflict", 409, r#","attempts":8"#);
        assert_eq!(
            classify(409, &body),
            Ok(Outcome::Error {
                kind: "conflict",
                attempts: 8
            })
        );
        assert!(classify(409, &problem("conflict", 409, "")).is_err());
        assert!(classify(409, &problem("already_exists", 409, "")).is_err());
    }

    #[test]
    fn service_unavailable_kinds_are_errors_of_that_kind() {
        for kind in ["lock_timeout", "unavailable", "overloaded", "request_timeout"] {
            assert_eq!(
                classify(503, &problem(kind, 503, "")),
                Ok(Outcome::Error { kind, attempts: 1 }),
                "{kind}"
            );
        }
        assert!(classify(503, &problem("not_ready", 503, "")).is_err());
        assert!(classify(503, "Service Unavailable").is_err());
    }

    #[test]
    fn everything_else_is_unexpected_and_fails_the_run() {
        assert_eq!(
            classify(500, &problem("internal", 500, "")),
            Ok(Outcome::Error {
                kind: "internal",
                attempts: 1
            })
        );
        for (status, kind) in [
            (401, "unauthorized"),
            (404, "not_found"),
            (404, "route_not_found"),
            (413, "payload_too_large"),
            (415, "unsupported_media_type"),
            (422, "invalid_input"),
            (500, "something_else"),
        ] {
            let error = classify(status, &problem(kind, status, "")).expect_err(kind);
            assert_eq!(error.status, status);
        }
        assert!(classify(201, &receipt("bench-0000007", 2, "guarded", false)).is_err());
        let long = "x".repeat(10_000);
        let error = classify(502, &long).unwrap_err();
        assert_eq!(error.body_start.chars().count(), QUOTED_BODY_CHARS_MAX);
        assert!(crate::tally::is_fatal_error_kind("http_unexpected"));
        assert!(crate::tally::is_fatal_error_kind("http_transport"));
        assert!(!crate::tally::is_fatal_error_kind("lock_timeout"));
    }
}
