//! Error responses as `application/problem+json` (RFC 9457).
//!
//! Every `type` is `urn:stockguard:problem:<kind>`, where `<kind>` is stable: clients branch on
//! it, never on `title` or `detail`. A 500 says nothing about its cause; the cause is logged.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use stockguard_core::DeductError;
use utoipa::ToSchema;

/// Prefix of every problem `type`.
pub const PROBLEM_TYPE_PREFIX: &str = "urn:stockguard:problem:";
/// Media type of every error body.
pub const PROBLEM_CONTENT_TYPE: &str = "application/problem+json";

/// An RFC 9457 problem document.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProblemDetails {
    /// Stable identifier of the problem kind, `urn:stockguard:problem:<kind>`.
    #[serde(rename = "type")]
    pub problem_type: String,
    /// Short human-readable summary of the kind.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// Human-readable explanation of this occurrence.
    pub detail: String,
    /// Units on hand when a deduction was refused (insufficient_stock only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// Units requested (insufficient_stock only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested: Option<i64>,
    /// Attempts made before giving up (conflict only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// The SKU row's version now (version_mismatch only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<i64>,
    /// The key that resolves an unknown outcome: retry with it (outcome_unknown only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Every short line of a refused order, with what its SKU had (insufficient_stock of an
    /// order only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lines: Option<Vec<ShortLineBody>>,
    /// Every unknown SKU an order named (not_found of an order only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skus: Option<Vec<String>>,
    /// Where a reused order or hold id's stored lines and this request differ (order_mismatch
    /// and hold_mismatch only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatches: Option<Vec<LineMismatchBody>>,
    /// How the hold ended (hold_expired and hold_resolved only).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub state: Option<&'static str>,
    /// When the hold expired, RFC 3339 (hold_expired only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// A line of a refused order.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ShortLineBody {
    /// The SKU.
    pub sku: String,
    /// Units the order asked for (its lines for this SKU summed).
    pub requested: i64,
    /// Units the SKU had when the order was refused.
    pub available: i64,
}

/// Where a reused order id's stored lines and a new request differ.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LineMismatchBody {
    /// The SKU.
    pub sku: String,
    /// Units stored with the order id (0: not in the stored order).
    pub stored: i64,
    /// Units in this request (0: not in it).
    pub given: i64,
}

/// An error response: a problem document plus the headers that go with it.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    // Boxed so that `Result<_, ApiError>` stays small on the success path.
    body: Box<ProblemDetails>,
    retry_after: Option<Duration>,
    www_authenticate: bool,
}

impl ApiError {
    /// A problem of `kind` with the given status, title and detail.
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<String>) -> Self {
        Self {
            status,
            body: Box::new(ProblemDetails {
                problem_type: format!("{PROBLEM_TYPE_PREFIX}{kind}"),
                title: title.to_owned(),
                status: status.as_u16(),
                detail: detail.into(),
                available: None,
                requested: None,
                attempts: None,
                current_version: None,
                idempotency_key: None,
                lines: None,
                skus: None,
                mismatches: None,
                state: None,
                expires_at: None,
            }),
            retry_after: None,
            www_authenticate: false,
        }
    }

    /// 422 for input that was refused before anything changed.
    pub fn invalid_input(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "Invalid input",
            detail,
        )
    }

    /// 400 for a request that could not be read as HTTP says it should be (a body cut short).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", "Bad request", detail)
    }

    /// 401 for a missing or wrong bearer token.
    pub fn unauthorized() -> Self {
        let mut error = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Unauthorized",
            "this request needs a valid `Authorization: Bearer <token>` header",
        );
        error.www_authenticate = true;
        error
    }

    /// 413 for a body over the configured limit.
    pub fn payload_too_large(limit_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Payload too large",
            format!("the request body exceeds the limit of {limit_bytes} bytes"),
        )
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(kind: &str, title: &str, detail: impl Into<String>, retry_after: Duration) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, kind, title, detail);
        error.retry_after = Some(retry_after);
        error
    }

    /// 429 with `Retry-After`: the request is refused because one like it is running.
    pub fn too_many_requests(
        kind: &str,
        title: &str,
        detail: impl Into<String>,
        retry_after: Duration,
    ) -> Self {
        let mut error = Self::new(StatusCode::TOO_MANY_REQUESTS, kind, title, detail);
        error.retry_after = Some(retry_after);
        error
    }

    /// 500 with nothing about the cause; the caller must have logged it.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal server error",
            "an unexpected error occurred; it has been logged",
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem document.
    pub fn body(&self) -> &ProblemDetails {
        &self.body
    }
}

impl ApiError {
    /// A 409 naming where a stored order's or hold's lines differ from this request's.
    fn mismatch(
        kind: &'static str,
        title: &'static str,
        detail: &'static str,
        mismatches: Vec<stockguard_core::LineMismatch>,
    ) -> Self {
        let mut problem = Self::new(StatusCode::CONFLICT, kind, title, detail);
        problem.body.mismatches = Some(
            mismatches
                .into_iter()
                .map(|m| LineMismatchBody {
                    sku: m.sku,
                    stored: m.stored,
                    given: m.given,
                })
                .collect(),
        );
        problem
    }
}

impl From<DeductError> for ApiError {
    fn from(error: DeductError) -> Self {
        match error {
            DeductError::InsufficientStock { requested, available } => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    "insufficient_stock",
                    "Insufficient stock",
                    format!("requested {requested} units but only {available} are available"),
                );
                problem.body.available = Some(available);
                problem.body.requested = Some(requested);
                problem
            }
            DeductError::NotFound => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "SKU not found",
                "no SKU has this id",
            ),
            DeductError::OrderShort { lines } => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    "insufficient_stock",
                    "Insufficient stock",
                    format!(
                        "{} line(s) of the order asked for more than their SKU has; nothing was changed",
                        lines.len()
                    ),
                );
                problem.body.lines = Some(
                    lines
                        .into_iter()
                        .map(|line| ShortLineBody {
                            sku: line.sku.as_str().to_owned(),
                            requested: line.requested,
                            available: line.available,
                        })
                        .collect(),
                );
                problem
            }
            DeductError::SkusNotFound { skus } => {
                let mut problem = Self::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    "SKU not found",
                    format!(
                        "{} SKU(s) of the order do not exist; nothing was changed",
                        skus.len()
                    ),
                );
                problem.body.skus = Some(skus.iter().map(|sku| sku.as_str().to_owned()).collect());
                problem
            }
            DeductError::OrderMismatch { mismatches } => Self::mismatch(
                "order_mismatch",
                "Order id reused",
                "this order id was already placed with other lines; nothing was changed",
                mismatches,
            ),
            DeductError::HoldMismatch { mismatches } => Self::mismatch(
                "hold_mismatch",
                "Hold id reused",
                "this hold id was already placed with other lines; nothing was changed",
                mismatches,
            ),
            DeductError::HoldNotFound => Self::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "Hold not found",
                "no hold has this id",
            ),
            DeductError::HoldExpired { expires_at } => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    "hold_expired",
                    "Hold expired",
                    format!(
                        "the hold expired at {expires_at}: its units are back in stock; nothing was changed"
                    ),
                );
                problem.body.expires_at = Some(expires_at.to_rfc3339());
                problem.body.state = Some(stockguard_core::HoldState::Expired.as_str());
                problem
            }
            DeductError::HoldResolved { state } => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    "hold_resolved",
                    "Hold already resolved",
                    format!("the hold was already {state}, and resolves once; nothing was changed"),
                );
                problem.body.state = Some(state.as_str());
                problem
            }
            DeductError::AlreadyExists => Self::new(
                StatusCode::CONFLICT,
                "already_exists",
                "SKU already exists",
                "a SKU with this id already exists",
            ),
            DeductError::Conflict { attempts } => {
                let mut problem = Self::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    "Conflict after retries",
                    format!(
                        "gave up after {attempts} conflicting attempts; nothing was changed, safe to retry"
                    ),
                );
                problem.body.attempts = Some(attempts);
                problem
            }
            DeductError::LockTimeout => Self::unavailable(
                "lock_timeout",
                "Lock timeout",
                "the SKU is busy; nothing was changed, retry later",
                Duration::from_secs(1),
            ),
            DeductError::Unavailable {
                reason,
                retry_after,
                source,
            } => {
                if let Some(source) = &source {
                    tracing::warn!(reason, error = %source, "store unavailable");
                }
                Self::unavailable(
                    "unavailable",
                    "Service unavailable",
                    format!("{reason}; nothing was changed, retry later"),
                    retry_after,
                )
            }
            DeductError::OutcomeUnknown {
                reason,
                idempotency_key,
                retry_after,
                source,
            } => {
                tracing::warn!(
                    reason,
                    idempotency_key = idempotency_key.as_ref().map(|k| k.as_str()),
                    error = source.as_deref().map(|s| error_chain(s)),
                    "outcome unknown"
                );
                let mut problem = Self::unavailable(
                    "outcome_unknown",
                    "Outcome unknown",
                    format!(
                        "{reason}; the change may or may not have committed (at most once). Retry with the same \
                         Idempotency-Key: the retry replays the committed receipt or applies it exactly once"
                    ),
                    retry_after,
                );
                problem.body.idempotency_key = idempotency_key.map(|k| k.as_str().to_owned());
                problem
            }
            DeductError::VersionMismatch { expected, current } => {
                let mut problem = Self::new(
                    StatusCode::PRECONDITION_FAILED,
                    "version_mismatch",
                    "Version mismatch",
                    format!(
                        "the SKU row is at version {current}, not {expected}: it changed since it was read; nothing was changed, read it again"
                    ),
                );
                problem.body.current_version = Some(current);
                problem
            }
            DeductError::IdempotencyKeyReused => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "Idempotency key reused",
                "this Idempotency-Key was already used for a different request",
            ),
            DeductError::InvalidInput(input) => Self::invalid_input(input.to_string()),
            internal @ DeductError::Internal { .. } => {
                tracing::error!(error = %error_chain(&internal), "internal error");
                Self::internal()
            }
            other => {
                tracing::error!(error = %error_chain(&other), "unmapped store error");
                Self::internal()
            }
        }
    }
}

/// The error and all its sources, for logs and the CLI. A cause whose text the chain already
/// holds is left out: many errors (sqlx's among them) repeat their source in their own
/// message, and printing it again made one failure read like three.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.body).unwrap_or_default();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(PROBLEM_CONTENT_TYPE),
        );
        if let Some(retry_after) = self.retry_after {
            // Retry-After takes whole seconds; round up so clients never retry early.
            let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        if self.www_authenticate {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer {
        text: String,
        source: Option<Box<Layer>>,
    }

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.text)
        }
    }

    impl std::error::Error for Layer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.source.as_deref().map(|s| s as _)
        }
    }

    fn layer(text: &str, source: Option<Layer>) -> Layer {
        Layer {
            text: text.to_owned(),
            source: source.map(Box::new),
        }
    }

    #[test]
    fn error_chain_names_each_cause_once() {
        let refused = layer("Connection refused (os error 111)", None);
        let io = layer(
            "error communicating with database: Connection refused (os error 111)",
            Some(refused),
        );
        let top = layer("connecting to PostgreSQL", Some(io));
        assert_eq!(
            error_chain(&top),
            "connecting to PostgreSQL: error communicating with database: Connection refused (os error 111)"
        );
    }
}
