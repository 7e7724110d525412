//! Extractors: authentication, JSON bodies and path parameters, each failing with a problem
//! document rather than axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use stockguard_core::SkuId;
use subtle::ConstantTimeEq;

use super::AppState;
use crate::problem::ApiError;

/// Passes when no token is configured or the request carries `Authorization: Bearer <token>`.
#[derive(Debug)]
pub struct Authorized;

impl FromRequestParts<AppState> for Authorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Some(expected) = state.policy.auth_token.as_deref() else {
            return Ok(Self);
        };
        if token_matches(bearer_token(parts), expected) {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// Passes the audit: when any token is configured, the request must carry the auth token or
/// the audit-only token. (A full audit reads the whole ledger, so it is not for anyone who can
/// reach the port.)
#[derive(Debug)]
pub struct AuditAuthorized;

impl FromRequestParts<AppState> for AuditAuthorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let policy = &state.policy;
        let accepted = [policy.auth_token.as_deref(), policy.audit_token.as_deref()];
        if accepted.iter().all(Option::is_none) {
            return Ok(Self);
        }
        let presented = bearer_token(parts);
        // Both compared, whichever matches, so the time taken does not tell which one did.
        let matched = accepted
            .iter()
            .flatten()
            .fold(false, |any, expected| token_matches(presented, expected) | any);
        if matched {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized())
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header, or "" without one.
fn bearer_token(parts: &Parts) -> &str {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
        .unwrap_or("")
}

/// Constant time in the token's content, so the comparison does not reveal how many leading
/// bytes matched. (A length mismatch fails early; the length is not secret.)
fn token_matches(presented: &str, expected: &str) -> bool {
    bool::from(presented.as_bytes().ct_eq(expected.as_bytes()))
}

/// A JSON object body whose every failure is a problem document: 415 without a JSON content
/// type, 413 over the body limit, 400 when the body cannot be read in full (the client stopped
/// short of its Content-Length), 422 for anything but a JSON object, malformed JSON or wrong
/// fields/types.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = json_bytes(request, state).await?;
        require_object(&bytes)?;
        parse(&bytes).map(JsonBody)
    }
}

/// The body of a request that says it is JSON: 415 when it does not, 413 over the limit, 400
/// when it cannot be read in full.
async fn json_bytes(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let is_json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(|value| {
            let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
            mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
        })
        .unwrap_or(false);
    if !is_json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Unsupported media type",
            "the request body must be JSON with `Content-Type: application/json`",
        ));
    }
    Bytes::from_request(request, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::payload_too_large(state.policy.body_limit_bytes)
        } else {
            // The body stream failed: the connection ended before the declared length, or
            // broke. Not a JSON problem, so not a 422.
            ApiError::bad_request(format!("could not read the request body in full: {rejection}"))
        }
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| ApiError::invalid_input(format!("invalid JSON body: {e}")))
}

/// A body that may be left out: no body at all (no `Content-Type`, and no or a zero
/// `Content-Length`), an empty JSON body or JSON `null` is `T::default()`; any other body is
/// read as a [`JsonBody`], with its refusals.
#[derive(Debug)]
pub struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let no_body = !headers.contains_key(header::CONTENT_TYPE)
            && headers
                .get(header::CONTENT_LENGTH)
                .is_none_or(|length| length.as_bytes() == b"0")
            && !headers.contains_key(header::TRANSFER_ENCODING);
        if no_body {
            return Ok(Self(T::default()));
        }
        let bytes = json_bytes(request, state).await?;
        let text = bytes.trim_ascii();
        if text.is_empty() || text == b"null" {
            return Ok(Self(T::default()));
        }
        require_object(&bytes)?;
        parse(&bytes).map(Self)
    }
}

/// Refuses any body but a JSON object before deserializing it. Serde's derived struct
/// visitors also accept a sequence of the fields in order, so without this `[1]` would deduct
/// one unit and `["sku", 5]` would create a SKU: a second, undocumented body format.
fn require_object(body: &[u8]) -> Result<(), ApiError> {
    // JSON's insignificant whitespace: space, tab, line feed, carriage return.
    let first = body
        .iter()
        .find(|byte| !matches!(byte, b' ' | b'\t' | b'\n' | b'\r'));
    let found = match first {
        Some(b'{') => return Ok(()),
        None => "an empty body",
        Some(b'[') => "an array",
        Some(b'"') => "a string",
        Some(b'-' | b'0'..=b'9') => "a number",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        Some(_) => "something that is not JSON",
    };
    Err(ApiError::invalid_input(format!(
        "the request body must be a JSON object, not {found}"
    )))
}

/// The SKU of a `/v1/skus/{sku}/…` path, validated, and recorded on the request span.
pub(crate) fn sku_from_path(path: Result<Path<String>, PathRejection>) -> Result<SkuId, ApiError> {
    let Path(raw) = path.map_err(|e| ApiError::invalid_input(format!("invalid path: {e}")))?;
    let sku = SkuId::parse(raw).map_err(|e| ApiError::invalid_input(e.to_string()))?;
    super::trace::record_sku(sku.as_str());
    Ok(sku)
}
