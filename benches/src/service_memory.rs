//! The service's memory as open connections grow (issue 14): the real `stockguard serve` (the
//! binary built from crates/api, beside this one) on a fresh PostgreSQL database, its resident
//! set read from /proc at idle, then with 100 and with 1 000 keep-alive connections open, each
//! of which has made a real `GET /healthz` and a real deduction. A reading above the target is
//! reported; a reading that could not be taken fails the run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Serialize;
use stockguard_api::config::{
    DEFAULT_ACQUIRE_TIMEOUT_MS, DEFAULT_CONCURRENCY_LIMIT, DEFAULT_LOCK_TIMEOUT_MS, DEFAULT_POOL_SIZE,
    DEFAULT_REQUEST_TIMEOUT_MS,
};
use stockguard_core::Strategy;
use stockguard_testkit::Backend;
use tokio::task::JoinSet;

use crate::chaos::service::{Service, ServiceConfig, find_binary, free_port};
use crate::db::{FreshDatabase, in_fresh_database};
use crate::report::Results;

/// Open connections at each reading after the idle one.
pub const CONNECTION_STEPS: [usize; 2] = [100, 1_000];
/// The target (issue 14): at most 64 MiB resident with 1 000 connections open.
pub const RSS_TARGET_MIB: f64 = 64.0;
/// Where the target applies.
pub const RSS_TARGET_CONNECTIONS: usize = 1_000;
/// Connections opened and warmed at once: far below the service's concurrency limit (512), so
/// no warming request is shed, and twice the pool (16), so a deduction waits briefly at most.
const WARM_PARALLEL: usize = 32;
/// Descriptors either process needs beside the connections (pools, log files, the runtime).
const FD_HEADROOM: u64 = 256;
/// Connecting to a loopback port is immediate; anything slower means the service is gone.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Later than the service's own request timeout, so a slow request comes back as its 503.
const EXCHANGE_TIMEOUT: Duration = Duration::from_millis(DEFAULT_REQUEST_TIMEOUT_MS + 5_000);
/// Bound on the whole section: start, 1 000 connections warmed, stop.
const SECTION_TIMEOUT: Duration = Duration::from_secs(180);
/// Pause before each reading, so the last warming requests have been answered and freed.
const SETTLE: Duration = Duration::from_millis(300);
/// Time in-flight requests get when the service is stopped (none are in flight by then).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// The one SKU every warming deduction takes a unit from.
const SKU: &str = "rss-probe";
/// Enough that no warming deduction is refused.
const INITIAL_STOCK: i64 = 1_000_000;

/// The service's memory at one number of open connections.
#[derive(Debug, Clone, Serialize)]
pub struct MemoryReading {
    /// Keep-alive connections open (each has made a `GET /healthz` and a deduction); 0 at idle.
    pub open_connections: usize,
    /// `VmRSS` from /proc/<pid>/status.
    pub rss_kib: u64,
    /// `VmHWM`: the highest resident set since the service started.
    pub hwm_kib: u64,
    /// Sockets the service held: the connections, its database pool, the listener and the
    /// readiness client's connection.
    pub service_sockets: usize,
}

/// What the section measured, and the settings the service ran with.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceMemoryResult {
    /// The `stockguard` binary measured.
    pub binary: String,
    /// Its build profile (`debug` or `release`): the directory it was built into.
    pub build: String,
    /// The database behind it.
    pub engine: String,
    /// The pool size the service reported on /metrics.
    pub pool_size: u64,
    /// /v1 requests served at once (the service's default). It bounds requests in flight, not
    /// connections: `axum::serve` accepts every connection, with no idle or header timeout.
    pub concurrency_limit: usize,
    /// The soft `RLIMIT_NOFILE` both processes ran with (the service inherits the bench's).
    pub open_files_limit: u64,
    /// Idle, then one per entry of [`CONNECTION_STEPS`].
    pub readings: Vec<MemoryReading>,
}

/// `true` when `rss_kib` is within the target.
pub fn within_target(rss_kib: u64) -> bool {
    kib_to_mib(rss_kib) <= RSS_TARGET_MIB
}

/// KiB as MiB, for the report.
pub fn kib_to_mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Runs the section when the run has PostgreSQL, logging the readings; a failed measurement
/// is a case error (the run fails), a missed target is not.
pub async fn run_service_memory_section(out: &Path, log: &impl Fn(String), results: &mut Results) {
    if !results.databases.contains_key(&Backend::Postgres) {
        let reason = "PostgreSQL is not among this run's databases".to_owned();
        log(format!("service memory: skipped ({reason})"));
        results.service_memory_skipped = Some(reason);
        return;
    }
    let label = "service memory vs open connections (postgres)";
    let measured = tokio::time::timeout(SECTION_TIMEOUT, measure_service_memory(out)).await;
    match measured.unwrap_or_else(|_| Err(anyhow::anyhow!("not done within {SECTION_TIMEOUT:?}"))) {
        Ok(result) => {
            let readings: Vec<String> = result
                .readings
                .iter()
                .map(|r| {
                    format!(
                        "{} conns {:.1} MiB (HWM {:.1})",
                        r.open_connections,
                        kib_to_mib(r.rss_kib),
                        kib_to_mib(r.hwm_kib)
                    )
                })
                .collect();
            log(format!(
                "{label} ({} build): {}",
                result.build,
                readings.join(", ")
            ));
            results.service_memory = Some(result);
        }
        Err(error) => {
            log(format!("CASE FAILED: {label}: {error:#}"));
            results.case_errors.push(format!("{label}: {error:#}"));
        }
    }
}

/// Starts `stockguard serve` on a fresh PostgreSQL database and reads its memory at each step.
/// The database is dropped and the service stopped on every path (the child is killed when
/// its handle drops, so also when this future is cancelled).
pub async fn measure_service_memory(out: &Path) -> anyhow::Result<ServiceMemoryResult> {
    let needed = CONNECTION_STEPS.iter().max().copied().unwrap_or(0) as u64 + FD_HEADROOM;
    let open_files_limit = raise_open_files_limit(needed)?;
    let binary = find_binary(None).map_err(|_| {
        anyhow::anyhow!(
            "no `stockguard` binary beside this one: build both first, e.g. `cargo build --release -p \
             stockguard-api -p stockguard-bench` (debug: without --release)"
        )
    })?;
    in_fresh_database(Backend::Postgres, async |database| {
        measure_in(database, binary, out, open_files_limit).await
    })
    .await
}

async fn measure_in(
    database: &FreshDatabase,
    binary: PathBuf,
    out: &Path,
    open_files_limit: u64,
) -> anyhow::Result<ServiceMemoryResult> {
    let token = format!("rss-{}", uuid::Uuid::new_v4().simple());
    let millis = Duration::from_millis;
    let mut service = Service::start(ServiceConfig {
        bin: binary.clone(),
        port: free_port()?,
        database_url: database.url(),
        strategy: Strategy::Guarded,
        token: token.clone(),
        log: out.join("service-memory.log"),
        request_timeout: millis(DEFAULT_REQUEST_TIMEOUT_MS),
        pool_size: DEFAULT_POOL_SIZE,
        acquire_timeout: millis(DEFAULT_ACQUIRE_TIMEOUT_MS),
        lock_timeout: millis(DEFAULT_LOCK_TIMEOUT_MS),
        shutdown_grace: SHUTDOWN_GRACE,
        redis_url: None,
    })
    .await
    .context("starting stockguard serve")?;
    let measured = measure_running(&service, &binary, &token, open_files_limit).await;
    let stopped = service.stop().await.context("stopping stockguard serve");
    let result = measured?;
    stopped?;
    Ok(result)
}

async fn measure_running(
    service: &Service,
    binary: &Path,
    token: &str,
    open_files_limit: u64,
) -> anyhow::Result<ServiceMemoryResult> {
    let pid = service.pid().context("the service is not running")?;
    let address: SocketAddr = format!("127.0.0.1:{}", service.config().port).parse()?;
    let requests = Arc::new(Requests::new(address, token));
    tokio::time::sleep(SETTLE).await;
    let mut readings = vec![read_memory(pid, 0)?];
    let mut connections: Vec<SendRequest<Full<Bytes>>> = Vec::new();
    {
        // The SKU, created through the service on a connection of its own that then closes.
        let mut setup = open(address).await?;
        let body = format!(r#"{{"sku":"{SKU}","initial_stock":{INITIAL_STOCK}}}"#);
        let (status, answer) = exchange(&mut setup, requests.post("/v1/skus", body)?).await?;
        expect(status, StatusCode::CREATED, "POST /v1/skus", &answer)?;
    }
    let pool_size = service
        .pool_gauges()
        .await
        .context("reading the pool size from /metrics")?
        .1;
    for target in CONNECTION_STEPS {
        let more = target.saturating_sub(connections.len());
        connections.extend(open_and_warm(&requests, more).await?);
        let closed = connections.iter().filter(|c| c.is_closed()).count();
        ensure!(
            closed == 0,
            "{closed} of {target} connections closed before the reading"
        );
        tokio::time::sleep(SETTLE).await;
        let reading = read_memory(pid, target)?;
        ensure!(
            reading.service_sockets >= target,
            "the service holds {} sockets for {target} open connections",
            reading.service_sockets
        );
        let closed = connections.iter().filter(|c| c.is_closed()).count();
        ensure!(
            closed == 0,
            "{closed} of {target} connections closed during the reading"
        );
        readings.push(reading);
    }
    // Closed before the service stops, so its graceful shutdown has no connection to wait for.
    drop(connections);
    let build = binary
        .parent()
        .and_then(Path::file_name)
        .map_or_else(|| "unknown".to_owned(), |dir| dir.to_string_lossy().into_owned());
    Ok(ServiceMemoryResult {
        binary: binary.display().to_string(),
        build,
        engine: Backend::Postgres.to_string(),
        pool_size,
        concurrency_limit: DEFAULT_CONCURRENCY_LIMIT,
        open_files_limit,
        readings,
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard one (the service, started afterwards, inherits
/// it); fails when even the hard limit is below `needed`.
fn raise_open_files_limit(needed: u64) -> anyhow::Result<u64> {
    let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
    let hard = maximum.unwrap_or(u64::MAX);
    ensure!(
        hard >= needed,
        "the open-files hard limit is {hard} and this section needs {needed} descriptors in the bench \
         and in the service (1 000 connections each): raise it (`ulimit -Hn`, LimitNOFILE=, or \
         /etc/security/limits.conf) or run with --service-memory off"
    );
    if current != maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: maximum,
                maximum,
            },
        )
        .context("raising the soft open-files limit to the hard one")?;
    }
    Ok(hard)
}

/// The requests each connection makes, built once.
struct Requests {
    address: SocketAddr,
    host: String,
    authorization: String,
    deduct_path: String,
}

impl Requests {
    fn new(address: SocketAddr, token: &str) -> Self {
        Self {
            address,
            host: address.to_string(),
            authorization: format!("Bearer {token}"),
            deduct_path: format!("/v1/skus/{SKU}/deduct"),
        }
    }

    fn healthz(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::builder()
            .method(Method::GET)
            .uri("/healthz")
            .header(HOST, &self.host)
            .body(Full::new(Bytes::new()))?)
    }

    fn post(&self, path: &str, body: String) -> anyhow::Result<Request<Full<Bytes>>> {
        Ok(Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(HOST, &self.host)
            .header(AUTHORIZATION, &self.authorization)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))?)
    }

    fn deduct(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        self.post(&self.deduct_path, r#"{"quantity":1}"#.to_owned())
    }
}

/// Opens `count` keep-alive connections, `WARM_PARALLEL` at a time, each making one
/// `GET /healthz` and one deduction before the next is opened.
async fn open_and_warm(
    requests: &Arc<Requests>,
    count: usize,
) -> anyhow::Result<Vec<SendRequest<Full<Bytes>>>> {
    let per_task = count.div_ceil(WARM_PARALLEL);
    let mut tasks = JoinSet::new();
    let mut left = count;
    while left > 0 {
        let share = per_task.min(left);
        left -= share;
        let requests = Arc::clone(requests);
        tasks.spawn(async move {
            let mut opened = Vec::with_capacity(share);
            for _ in 0..share {
                let mut connection = open(requests.address).await?;
                let (status, body) = exchange(&mut connection, requests.healthz()?).await?;
                expect(status, StatusCode::OK, "GET /healthz", &body)?;
                let (status, body) = exchange(&mut connection, requests.deduct()?).await?;
                expect(status, StatusCode::OK, "POST /v1/skus/{sku}/deduct", &body)?;
                opened.push(connection);
            }
            anyhow::Ok(opened)
        });
    }
    let mut connections = Vec::with_capacity(count);
    while let Some(joined) = tasks.join_next().await {
        connections.extend(joined.context("a warming task panicked")??);
    }
    Ok(connections)
}

async fn open(address: SocketAddr) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    crate::http::lean::open_http1(address, CONNECT_TIMEOUT).await
}

async fn exchange(
    connection: &mut SendRequest<Full<Bytes>>,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let answered = async {
        connection.ready().await?;
        let response = connection.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        anyhow::Ok((status, body))
    };
    tokio::time::timeout(EXCHANGE_TIMEOUT, answered)
        .await
        .context("no answer in time")?
}

fn expect(status: StatusCode, wanted: StatusCode, what: &str, body: &[u8]) -> anyhow::Result<()> {
    if status != wanted {
        bail!(
            "{what} answered {status}, not {wanted}: {}",
            String::from_utf8_lossy(body)
        );
    }
    Ok(())
}

/// `VmRSS`, `VmHWM` and the socket count of process `pid` right now.
fn read_memory(pid: u32, open_connections: usize) -> anyhow::Result<MemoryReading> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kib = |field: &str| {
        status_field_kib(&status, field)
            .with_context(|| format!("no {field} in {path}: has the service exited?"))
    };
    Ok(MemoryReading {
        open_connections,
        rss_kib: kib("VmRSS")?,
        hwm_kib: kib("VmHWM")?,
        service_sockets: count_sockets(pid)?,
    })
}

/// A `Name:   1234 kB` line of /proc/<pid>/status, in KiB.
fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

fn count_sockets(pid: u32) -> anyhow::Result<usize> {
    let dir = format!("/proc/{pid}/fd");
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
    Ok(entries
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("socket:"))
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_fields_parse_in_kib() {
        let status = "Name:\tstockguard\nVmHWM:\t   20480 kB\nVmRSS:\t   18432 kB\nThreads:\t5\n";
        assert_eq!(status_field_kib(status, "VmRSS"), Some(18_432));
        assert_eq!(status_field_kib(status, "VmHWM"), Some(20_480));
        assert_eq!(status_field_kib(status, "VmSwap"), None);
        assert_eq!(status_field_kib(status, "Threads"), None);
    }

    #[test]
    fn the_target_is_64_mib_inclusive() {
        assert!(within_target(64 * 1024));
        assert!(!within_target(64 * 1024 + 1));
    }

    #[test]
    fn this_process_has_a_resident_set_and_sockets_are_counted() {
        let reading = read_memory(std::process::id(), 0).unwrap();
        assert!(reading.rss_kib > 0 && reading.hwm_kib >= reading.rss_kib);
        let _listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert!(count_sockets(std::process::id()).unwrap() >= 1);
    }
}
