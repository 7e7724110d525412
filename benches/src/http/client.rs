//! The load generator's side of the `http` transport: the lean client (lean.rs), one
//! keep-alive connection per requester, one `POST /v1/skus/{sku}/deduct` per deduction.

use std::fmt;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderName, HeaderValue};
use stockguard_core::Strategy;

use super::classify::{Expected, classify_response, error_kind};
use super::lean::LeanClient;
use super::service::ServiceUnderTest;
use crate::case::Deductor;
use crate::tally::Outcome;
use crate::workload::Request;

/// The header a client's key travels in.
static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Deductions through `POST /v1/skus/{sku}/deduct` on a running service.
pub struct HttpDeductor {
    client: Arc<LeanClient>,
    // Built once: the hot path should measure the service, not string formatting.
    deduct_paths: Vec<String>,
    sku_names: Vec<String>,
    authorization: HeaderValue,
    strategy: Strategy,
    // The first request that failed in a way the tally cannot classify, for the diagnostic.
    first_failure: Mutex<Option<String>>,
}

impl fmt::Debug for HttpDeductor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpDeductor")
            .field("skus", &self.sku_names.len())
            .field("strategy", &self.strategy)
            .finish_non_exhaustive()
    }
}

impl HttpDeductor {
    /// A client with one keep-alive connection for each of `requesters` concurrent requesters
    /// on `service`.
    pub async fn new(
        service: &ServiceUnderTest,
        sku_names: &[String],
        strategy: Strategy,
        requesters: usize,
    ) -> anyhow::Result<Self> {
        Self::to(
            service.address(),
            service.auth_token(),
            sku_names,
            strategy,
            requesters,
        )
        .await
    }

    /// [`HttpDeductor::new`] for a service at `address` (or a proxy in front of several)
    /// that accepts `auth_token`.
    pub async fn to(
        address: std::net::SocketAddr,
        auth_token: &str,
        sku_names: &[String],
        strategy: Strategy,
        requesters: usize,
    ) -> anyhow::Result<Self> {
        let client = Arc::new(LeanClient::connect(address, requesters).await?);
        let deduct_paths = sku_names
            .iter()
            .map(|sku| format!("/v1/skus/{sku}/deduct"))
            .collect();
        let authorization = HeaderValue::from_str(&format!("Bearer {auth_token}"))
            .context("the auth token is a valid header value")?;
        Ok(Self {
            client,
            deduct_paths,
            sku_names: sku_names.to_vec(),
            authorization,
            strategy,
            first_failure: Mutex::new(None),
        })
    }

    /// The client, for the trivial-request ceiling on the same connections.
    pub fn client(&self) -> &Arc<LeanClient> {
        &self.client
    }

    /// The first request that failed on the wire or with an unexpected response, if any.
    pub fn first_failure(&self) -> Option<String> {
        self.first_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn note_failure(&self, describe: impl FnOnce() -> String) {
        let mut first = self
            .first_failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if first.is_none() {
            *first = Some(describe());
        }
    }

    fn transport_failure(&self, error: &anyhow::Error) -> Outcome {
        self.note_failure(|| format!("transport: {error:#}"));
        error_kind("http_transport")
    }
}

impl Deductor for HttpDeductor {
    async fn deduct(&self, deduction: &Request) -> Outcome {
        let (sku_index, units) = (deduction.sku_index, deduction.units);
        let mut request = self
            .client
            .request(Method::POST, &self.deduct_paths[sku_index])
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &deduction.key {
            match HeaderValue::from_str(key) {
                Ok(value) => request = request.header(IDEMPOTENCY_KEY.clone(), value),
                Err(error) => return self.transport_failure(&error.into()),
            }
        }
        let request = request.body(Full::new(Bytes::from(deduct_body(units, self.strategy))));
        let request = match request {
            Ok(request) => request,
            Err(error) => return self.transport_failure(&error.into()),
        };
        let (status, body) = match self.client.send(request).await {
            Ok(answer) => answer,
            Err(error) => return self.transport_failure(&error),
        };
        let expected = Expected {
            sku: &self.sku_names[sku_index],
            units,
            strategy: self.strategy,
            key: deduction.key.as_deref(),
        };
        classify_response(status.as_u16(), &body, &expected).unwrap_or_else(|unexpected| {
            self.note_failure(|| unexpected.to_string());
            error_kind("http_unexpected")
        })
    }
}

/// The JSON body of one deduction, naming the strategy so the server's per-request override
/// is exercised.
pub fn deduct_body(units: u32, strategy: Strategy) -> String {
    format!(r#"{{"quantity":{units},"strategy":"{}"}}"#, strategy.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_names_quantity_and_strategy() {
        let body = deduct_body(3, Strategy::Coalesced);
        let value: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(value, serde_json::json!({"quantity": 3, "strategy": "coalesced"}));
        for strategy in Strategy::ALL {
            let value: serde_json::Value = serde_json::from_str(&deduct_body(1, strategy)).unwrap();
            assert_eq!(value["strategy"], strategy.as_str());
        }
    }
}
