//! The HTTP client side: every request a chaos run sends goes through [`Api::send`], which
//! records it in the history whatever happens to it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use super::controls::mutant_answer;
use super::history::{Answer, OpKind, OpSpec, Record, Recorder, Role, TransportFailure};

/// Connecting to a loopback port is immediate; a slow connect means the service is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest body kept in the history.
const BODY_BYTES_MAX: usize = 2_048;

/// Knobs the fault injector turns while the clients run.
#[derive(Debug, Default)]
pub struct Knobs {
    /// While non-zero, every client request uses a timeout up to this (ms) and is likely
    /// abandoned.
    pub abandon_timeout_ms: AtomicU64,
    /// Requests the clients abandoned while `abandon_timeout_ms` was set.
    pub abandoned: AtomicU64,
}

impl Knobs {
    /// The timeout a client should use now, given its own. While abandoning, it is drawn
    /// between 50 µs and the knob's bound: a fixed few milliseconds outlast every answer
    /// of a fast service (SQLite on a quiet machine answers in about 1 ms), and the fault
    /// would have no effect; a spread abandons requests before, during and after sending.
    pub fn timeout(&self, own: Duration, rng: &mut impl rand::Rng) -> Duration {
        match self.abandon_timeout_ms.load(Ordering::Relaxed) {
            0 => own,
            ms => Duration::from_micros(rng.random_range(50..=ms.saturating_mul(1_000).max(50))),
        }
    }
}

/// Sends deductions and restocks to the service and records each one.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    authorization: HeaderValue,
    started: Instant,
    recorder: Arc<Recorder>,
    mutant: bool,
}

impl Api {
    /// A client for the service at `base` (`http://127.0.0.1:PORT`). `mutant` turns on the
    /// negative control that reports lost answers as definite refusals.
    pub fn new(
        base: String,
        token: &str,
        started: Instant,
        recorder: Arc<Recorder>,
        mutant: bool,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .http1_only()
            .redirect(reqwest::redirect::Policy::none())
            // Every retry is the runner's, with the same key, and recorded.
            .retry(reqwest::retry::never())
            .tcp_nodelay(true)
            .connect_timeout(CONNECT_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let authorization =
            HeaderValue::from_str(&format!("Bearer {token}")).context("the token is a header value")?;
        Ok(Self {
            http,
            base,
            authorization,
            started,
            recorder,
            mutant,
        })
    }

    /// Microseconds since the run started.
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The history this client records into.
    pub fn recorder(&self) -> &Arc<Recorder> {
        &self.recorder
    }

    /// Sends one request for `spec` and records it; returns the record.
    pub async fn send(&self, spec: &OpSpec, role: Role, client: u32, timeout: Duration) -> Record {
        let path = match spec.kind {
            OpKind::Deduct => "deduct",
            OpKind::Restock => "restock",
        };
        let url = format!("{}/v1/skus/{}/{path}", self.base, spec.sku);
        let start_us = self.now_us();
        let sent = self
            .http
            .post(url)
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .header("idempotency-key", &spec.key)
            .body(format!(r#"{{"quantity":{}}}"#, spec.quantity))
            .timeout(timeout)
            .send()
            .await;
        let answer = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => Answer::from_http(status, &body[..body.len().min(BODY_BYTES_MAX)]),
                    Err(error) => transport(&error),
                }
            }
            Err(error) => transport(&error),
        };
        let answer = if self.mutant {
            mutant_answer(answer)
        } else {
            answer
        };
        let record = Record {
            op: spec.op,
            kind: spec.kind,
            key: spec.key.clone(),
            sku: spec.sku.clone(),
            quantity: spec.quantity,
            role,
            client,
            start_us,
            end_us: self.now_us(),
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
            answer,
        };
        self.recorder.push(record.clone());
        record
    }

    /// Creates a SKU (before the faults start; not part of the history).
    pub async fn create_sku(&self, sku: &str, initial_stock: i64) -> anyhow::Result<()> {
        let response = self
            .http
            .post(format!("{}/v1/skus", self.base))
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&serde_json::json!({ "sku": sku, "initial_stock": initial_stock }))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .with_context(|| format!("creating SKU {sku}"))?;
        if !response.status().is_success() {
            bail!("creating SKU {sku}: HTTP {}", response.status());
        }
        Ok(())
    }
}

fn transport(error: &reqwest::Error) -> Answer {
    // A failed connect sent nothing; a timeout is the client abandoning the request.
    let failure = if error.is_connect() {
        TransportFailure::NotSent
    } else if error.is_timeout() {
        TransportFailure::Timeout
    } else {
        TransportFailure::Lost
    };
    let mut detail = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        detail.push_str(": ");
        detail.push_str(&cause.to_string());
        source = cause.source();
    }
    Answer::Transport { failure, detail }
}
