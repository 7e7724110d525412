//! The `http` transport: the same case, driven through the `stockguard` HTTP service.
//!
//! Per case the harness opens the library store on the case's fresh database exactly as the
//! in-process path does (same adapter configuration, same pool size), wraps it in the service
//! (`stockguard_api::start`, bound to `127.0.0.1:0`, with an auth token so the auth check is
//! part of every request), and drives it with `reqwest` over HTTP/1.1 keep-alive. The
//! service runs on its own tokio runtime with its own worker threads, so client and server
//! are scheduled like two processes; both share the machine's cores (and the database's).
//! Warm-up, stock sizing, the seeded request streams and the in-database audit are the
//! in-process path's own ([`crate::runner::measure`]).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use stockguard_api::{AnyStore, DatabaseTarget, RunningServer, Settings};
use stockguard_core::Strategy;

use crate::db::{Backend, FreshDatabase, RawPool};
use crate::runner::{CaseResult, CaseSpec, CoalescerCounters, Deductor, Variant, measure};
use crate::tally::Outcome;

/// Longest a request may take inside the service before it answers 503 `request_timeout`.
/// Far above any latency a healthy case shows (the slowest, pessimistic at one hot SKU, has a
/// p99 well under a second), so it never decides a case; it only bounds a stuck one.
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// The client gives up later than the server, so a slow request is answered by the service
/// (a 503 the tally can classify) rather than cut off on the wire.
pub const CLIENT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Connecting to a loopback port is immediate; anything slower means the service is gone.
pub const CLIENT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time in-flight requests get when the service shuts down after a case. The drive has
/// finished by then, so nothing should be in flight.
pub const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the harness waits for the service runtime's threads to stop after shutdown.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The service's concurrency limit is this many times the requesters: each requester has at
/// most one request in flight, and the headroom keeps a request whose connection was just
/// dropped from shedding a live one, so a 503 `overloaded` never shapes a measurement.
const CONCURRENCY_LIMIT_PER_REQUESTER: usize = 2;
/// Longest response body quoted in a diagnostic.
const QUOTED_BODY_CHARS_MAX: usize = 300;

/// The stockguard service serving one case's store on its own runtime.
pub struct ServiceUnderTest {
    // `None` once `shutdown` has taken them, so `Drop` can tell whether it ran.
    running: Option<(tokio::runtime::Runtime, RunningServer)>,
    store: Arc<AnyStore>,
    base_url: String,
    auth_token: String,
}

impl fmt::Debug for ServiceUnderTest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceUnderTest")
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl ServiceUnderTest {
    /// Opens the case's store on a new runtime, migrates it, and starts the service on it.
    pub async fn start(spec: &CaseSpec, database_url: &str) -> anyhow::Result<Self> {
        // Worker threads default to the number of cores, as `stockguard serve` would get in
        // its own process.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sg-bench-service")
            .enable_all()
            .build()
            .context("starting the service runtime")?;
        let auth_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let settings = service_settings(spec, database_url, &auth_token)?;
        let (backend, url, pool_size) = (spec.backend, database_url.to_owned(), spec.pool_size);
        // The store is opened on the service runtime: the coalescer spawns its batch leaders
        // on the runtime it runs on, and they belong with the service.
        let started = runtime
            .spawn(async move {
                let store = Arc::new(open_store(backend, &url, pool_size).await?);
                let server = stockguard_api::start(&settings, Arc::clone(&store))
                    .await
                    .context("starting the service")?;
                anyhow::Ok((store, server))
            })
            .await;
        let (store, server) = match started {
            Ok(Ok(started)) => started,
            Ok(Err(error)) => {
                runtime.shutdown_background();
                return Err(error);
            }
            Err(join_error) => {
                runtime.shutdown_background();
                return Err(anyhow::Error::new(join_error).context("the service start-up panicked"));
            }
        };
        Ok(Self {
            base_url: server.base_url(),
            running: Some((runtime, server)),
            store,
            auth_token,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The store the service runs on (for the coalescer counters).
    pub fn store(&self) -> Arc<AnyStore> {
        Arc::clone(&self.store)
    }

    /// Graceful shutdown: stop accepting, finish in-flight requests, close the store (its
    /// coalescer flushes and its pool closes), then stop the runtime's threads.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let Some((runtime, server)) = self.running.take() else {
            return Ok(());
        };
        let stopped = runtime.spawn(server.shutdown()).await;
        // Stopping a runtime blocks, which is not allowed on the harness's own runtime.
        tokio::task::spawn_blocking(move || runtime.shutdown_timeout(RUNTIME_SHUTDOWN_TIMEOUT))
            .await
            .context("stopping the service runtime")?;
        stopped
            .context("the service shutdown panicked")?
            .context("shutting the service down")
    }
}

impl Drop for ServiceUnderTest {
    fn drop(&mut self) {
        // Reached without `shutdown` only on an error path: stop the threads without
        // blocking (this may run inside the harness's runtime). The case's database is
        // dropped with FORCE afterwards, which ends the store's connections.
        if let Some((runtime, _server)) = self.running.take() {
            runtime.shutdown_background();
        }
    }
}

/// The service's settings for one case, built in code rather than read from flags or files.
fn service_settings(spec: &CaseSpec, database_url: &str, auth_token: &str) -> anyhow::Result<Settings> {
    let database = match spec.backend {
        Backend::Sqlite => DatabaseTarget::Sqlite(database_url.into()),
        Backend::Postgres | Backend::Mariadb => DatabaseTarget::parse(database_url)?,
    };
    let mut settings = Settings::for_database(database);
    settings.bind = "127.0.0.1:0".parse().expect("literal loopback address");
    // Every mutation then passes the bearer-token check, as in a real deployment.
    settings.auth_token = Some(auth_token.to_owned());
    settings.allow_strategy_override = true;
    if let Variant::Library(strategy) = spec.variant {
        settings.default_strategy = strategy;
    }
    settings.concurrency_limit = spec.requesters.max(1) * CONCURRENCY_LIMIT_PER_REQUESTER;
    settings.request_timeout = SERVER_REQUEST_TIMEOUT;
    settings.shutdown_grace = SERVER_SHUTDOWN_GRACE;
    // `start` does not open the store: the harness does (see `open_store`), with the adapter
    // configuration the in-process path uses, so `pool_size`, `acquire_timeout` and
    // `lock_timeout` here do not apply. The pool size is recorded for anyone reading them.
    settings.pool_size = spec.pool_size;
    Ok(settings)
}

/// Opens and migrates the case's store with the same configuration the in-process path uses.
async fn open_store(backend: Backend, url: &str, pool_size: u32) -> anyhow::Result<AnyStore> {
    let store = match backend {
        Backend::Postgres => AnyStore::Postgres(
            stockguard_postgres::PgStore::connect(crate::runner::pg_config(url, pool_size)).await?,
        ),
        #[cfg(feature = "mysql")]
        Backend::Mariadb => AnyStore::MySql(
            stockguard_mysql::MySqlStore::connect(crate::runner::mysql_config(url, pool_size)).await?,
        ),
        #[cfg(feature = "sqlite")]
        Backend::Sqlite => AnyStore::Sqlite(
            stockguard_sqlite::SqliteStore::connect(crate::runner::sqlite_config(url, pool_size)).await?,
        ),
        #[allow(unreachable_patterns)]
        other => bail!("this build has no {other} adapter (enable the `{other}` feature)"),
    };
    store.migrate().await?;
    Ok(store)
}

impl CoalescerCounters for AnyStore {
    fn coalescer_counters(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        let (stats, _queue_depth) = self.coalescer_stats();
        (
            stats.batches.load(Ordering::Relaxed),
            stats.batched_requests.load(Ordering::Relaxed),
        )
    }
}

/// Runs one case over HTTP in `database` (which the caller drops afterwards).
pub(crate) async fn run_over_http(
    spec: &CaseSpec,
    database: &FreshDatabase,
    sku_names: Vec<String>,
) -> anyhow::Result<CaseResult> {
    let Variant::Library(strategy) = spec.variant else {
        bail!(
            "{} bypasses the library, so it cannot run over http",
            spec.variant
        );
    };
    let service = ServiceUnderTest::start(spec, database.url()).await?;
    let outcome = drive_service(spec, database, &service, strategy, &sku_names).await;
    // Shut down whatever happened, so the next case starts on a quiet machine.
    let stopped = service.shutdown().await;
    let mut result = outcome?;
    stopped?;
    if strategy != Strategy::Coalesced {
        result.coalesced_batches = None;
        result.coalesced_mean_batch = None;
    }
    result.database = database.name().to_owned();
    Ok(result)
}

async fn drive_service(
    spec: &CaseSpec,
    database: &FreshDatabase,
    service: &ServiceUnderTest,
    strategy: Strategy,
    sku_names: &[String],
) -> anyhow::Result<CaseResult> {
    // The same small admin pool as in-process, for setup and the audit.
    let admin = RawPool::connect(spec.backend, database.url(), 2).await?;
    let deductor = match HttpDeductor::new(service, sku_names, strategy, spec.requesters) {
        Ok(deductor) => Arc::new(deductor),
        Err(error) => {
            admin.close().await;
            return Err(error);
        }
    };
    let store = service.store();
    let result = measure(spec, &admin, Arc::clone(&deductor), sku_names, || {
        store.coalescer_counters()
    })
    .await;
    if let Some(first) = deductor.first_failure() {
        eprintln!(
            "warning: {} on {} at {}: first failed HTTP request: {first}",
            spec.path_name(),
            spec.backend,
            spec.level
        );
    }
    admin.close().await;
    result
}

/// Deductions through `POST /v1/skus/{sku}/deduct` on a running service.
pub struct HttpDeductor {
    client: reqwest::Client,
    // Parsed once: the hot path should measure the service, not URL parsing.
    deduct_urls: Vec<reqwest::Url>,
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
    /// A client for `requesters` concurrent requesters on `service`.
    pub fn new(
        service: &ServiceUnderTest,
        sku_names: &[String],
        strategy: Strategy,
        requesters: usize,
    ) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            // The service is on loopback; an HTTP(S)_PROXY in the environment must not
            // reroute the measurement.
            .no_proxy()
            .http1_only()
            // A redirect or a silent retry would hide what the service answered: every
            // response is classified as it came.
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .referer(false)
            // One idle keep-alive connection per requester, so no request pays a reconnect.
            .pool_max_idle_per_host(requesters)
            .tcp_nodelay(true)
            .connect_timeout(CLIENT_CONNECT_TIMEOUT)
            .timeout(CLIENT_REQUEST_TIMEOUT)
            .build()
            .context("building the HTTP client")?;
        let base = service.base_url();
        let deduct_urls = sku_names
            .iter()
            .map(|sku| reqwest::Url::parse(&format!("{base}/v1/skus/{sku}/deduct")))
            .collect::<Result<Vec<_>, _>>()
            .context("building deduct URLs")?;
        let authorization = HeaderValue::from_str(&format!("Bearer {}", service.auth_token))
            .context("the auth token is a valid header value")?;
        Ok(Self {
            client,
            deduct_urls,
            sku_names: sku_names.to_vec(),
            authorization,
            strategy,
            first_failure: Mutex::new(None),
        })
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

    fn transport_failure(&self, error: &reqwest::Error) -> Outcome {
        self.note_failure(|| format!("transport: {error}"));
        error_kind("http_transport")
    }
}

impl Deductor for HttpDeductor {
    async fn deduct(&self, sku_index: usize, units: u32) -> Outcome {
        let sent = self
            .client
            .post(self.deduct_urls[sku_index].clone())
            .header(AUTHORIZATION, self.authorization.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .body(deduct_body(units, self.strategy))
            .send()
            .await;
        let response = match sent {
            Ok(response) => response,
            Err(error) => return self.transport_failure(&error),
        };
        let status = response.status().as_u16();
        // Reading the body to its end returns the connection to the keep-alive pool.
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => return self.transport_failure(&error),
        };
        let expected = Expected {
            sku: &self.sku_names[sku_index],
            units,
            strategy: self.strategy,
        };
        classify_response(status, &body, &expected).unwrap_or_else(|unexpected| {
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

/// What one request asked for, to check the answer against.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The SKU in the URL.
    pub sku: &'a str,
    /// Units in the body.
    pub units: u32,
    /// Strategy in the body.
    pub strategy: Strategy,
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
/// | 200 | receipt for this SKU, quantity and strategy, not replayed | success with the receipt's attempts and lock wait |
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
            // No request carries an Idempotency-Key, so nothing can be a replay.
            if receipt.replayed {
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

fn error_kind(kind: &'static str) -> Outcome {
    Outcome::Error { kind, attempts: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXPECTED: Expected<'static> = Expected {
        sku: "bench-0000007",
        units: 2,
        strategy: Strategy::Guarded,
    };

    fn receipt(sku: &str, quantity: i64, strategy: &str, replayed: bool) -> String {
        format!(
            r#"{{"sku":"{sku}","quantity":{quantity},"remaining":40,"ledger_id":9,"attempts":3,"replayed":{replayed},"lock_wait_us":1234,"strategy":"{strategy}"}}"#
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
