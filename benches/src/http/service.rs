//! The service under test: `stockguard_api::start` over the case's store, on a runtime of
//! its own.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use stockguard_api::store::StoreSettings;
use stockguard_api::{AnyStore, RunningServer, Settings};

use crate::case::{CaseSpec, Variant};
use crate::measure::open_store;

/// Longest a request may take inside the service before it answers 503 `request_timeout`.
/// Far above any latency a healthy case shows (the slowest, pessimistic at one hot SKU, has a
/// p99 well under a second), so it never decides a case; it only bounds a stuck one.
pub const SERVER_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Time in-flight requests get when the service shuts down after a case. The drive has
/// finished by then, so nothing should be in flight.
pub const SERVER_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long the harness waits for the service runtime's threads to stop after shutdown.
const RUNTIME_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// The service's concurrency limit is this many times the requesters: each requester has at
/// most one request in flight, and the headroom keeps a request whose connection was just
/// dropped from shedding a live one, so a 503 `overloaded` never shapes a measurement.
const CONCURRENCY_LIMIT_PER_REQUESTER: usize = 2;

/// The stockguard service serving one case's store on its own runtime.
pub struct ServiceUnderTest {
    // `None` once `shutdown` has taken them, so `Drop` can tell whether it ran.
    running: Option<(tokio::runtime::Runtime, RunningServer)>,
    store: Arc<AnyStore>,
    base_url: String,
    address: std::net::SocketAddr,
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
    pub async fn start(spec: &CaseSpec, store_settings: StoreSettings) -> anyhow::Result<Self> {
        let strategy = match spec.variant {
            Variant::Library(strategy) => Some(strategy),
            _ => None,
        };
        Self::start_for(store_settings, spec.requesters, strategy, None).await
    }

    /// [`ServiceUnderTest::start`] for `requesters` requesters, with `strategy` as the
    /// service's default and, with `redis_gate`, the Redis admission gate in front.
    pub async fn start_for(
        store_settings: StoreSettings,
        requesters: usize,
        strategy: Option<stockguard_core::Strategy>,
        redis_gate: Option<stockguard_redis_gate::GateConfig>,
    ) -> anyhow::Result<Self> {
        let auth_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        Self::start_with_token(store_settings, requesters, strategy, redis_gate, auth_token).await
    }

    /// [`ServiceUnderTest::start_for`] with a given auth token, so that several instances
    /// behind one proxy accept the same client.
    pub async fn start_with_token(
        store_settings: StoreSettings,
        requesters: usize,
        strategy: Option<stockguard_core::Strategy>,
        redis_gate: Option<stockguard_redis_gate::GateConfig>,
        auth_token: String,
    ) -> anyhow::Result<Self> {
        // Worker threads default to the number of cores, as `stockguard serve` would get in
        // its own process.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .thread_name("sg-bench-service")
            .enable_all()
            .build()
            .context("starting the service runtime")?;
        let mut settings = service_settings(requesters, strategy, &store_settings, &auth_token);
        settings.redis_gate = redis_gate;
        // The store is opened on the service runtime: the coalescer spawns its batch leaders
        // on the runtime it runs on, and they belong with the service.
        let started = runtime
            .spawn(async move {
                let store = Arc::new(open_store(store_settings).await?);
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
            address: server.addr(),
            running: Some((runtime, server)),
            store,
            auth_token,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The loopback address it listens on.
    pub fn address(&self) -> std::net::SocketAddr {
        self.address
    }

    /// The bearer token every mutation must carry.
    pub fn auth_token(&self) -> &str {
        &self.auth_token
    }

    /// The service's admission gate, when it has one (for the gate's counters).
    pub fn gate(&self) -> Option<Arc<stockguard_redis_gate::Gate>> {
        let (_, server) = self.running.as_ref()?;
        server.state().gate().cloned()
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
/// The store fields repeat what the store was opened with (`start` does not open it), so the
/// settings the service reports are the ones in force.
fn service_settings(
    requesters: usize,
    strategy: Option<stockguard_core::Strategy>,
    store: &StoreSettings,
    auth_token: &str,
) -> Settings {
    let mut settings = Settings::for_database(store.database.clone());
    settings.pool_size = store.pool_size;
    settings.acquire_timeout = store.acquire_timeout;
    settings.lock_timeout = store.lock_timeout;
    settings.shard_buckets = store.shard_buckets;
    settings.spread_eagerly = store.spread_eagerly;
    settings.recent_keys_max = store.recent_keys_max;
    settings.bind = "127.0.0.1:0".parse().expect("literal loopback address");
    // Every mutation then passes the bearer-token check, as in a real deployment.
    settings.auth_token = Some(auth_token.to_owned());
    settings.allow_strategy_override = true;
    if let Some(strategy) = strategy {
        settings.default_strategy = strategy;
    }
    settings.concurrency_limit = requesters.max(1) * CONCURRENCY_LIMIT_PER_REQUESTER;
    settings.request_timeout = SERVER_REQUEST_TIMEOUT;
    settings.shutdown_grace = SERVER_SHUTDOWN_GRACE;
    settings
}
