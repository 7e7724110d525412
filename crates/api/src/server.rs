//! Running the service: bind, serve, and shut down gracefully.

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::serve::ListenerExt;
use stockguard_core::{Capabilities, InventoryStore, ProbeReport, Strategy};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{DatabaseTarget, Settings};
use crate::http::{AppState, router};
use crate::store::AnyStore;
use stockguard_redis_gate::{Gate, Reconciler};

/// A server running on a tokio task.
#[derive(Debug)]
pub struct RunningServer {
    addr: SocketAddr,
    state: AppState,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// The address it listens on (the real port when bound to port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The handlers' shared state (store and metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// A handle that starts the graceful shutdown when sent `true`.
    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }

    /// Stops accepting, lets in-flight requests finish (up to the grace period), then
    /// closes the store (flushing coalesced batches and closing the pool).
    pub async fn shutdown(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    /// Waits until the server has stopped (after a shutdown signal).
    pub async fn wait(self) -> std::io::Result<()> {
        match self.task.await {
            Ok(result) => result,
            Err(join_error) => Err(std::io::Error::other(join_error)),
        }
    }
}

/// Binds `settings.bind` and serves `store` until the returned server is shut down.
pub async fn start(settings: &Settings, store: Arc<AnyStore>) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(settings.bind).await?;
    let addr = listener.local_addr()?;
    // Without TCP_NODELAY a response written in more than one segment can wait for the
    // client's delayed ACK (up to 40 ms on Linux) under Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY on an accepted connection");
        }
    });
    let mut state = AppState::new(Arc::clone(&store), settings);
    let mut reconciler = None;
    if let Some(config) = &settings.redis_gate {
        let gate = Gate::connect(config.clone())
            .await
            .map_err(std::io::Error::other)?;
        tracing::info!(namespace = %config.namespace, when_down = ?config.when_down, "redis admission gate on");
        state = state.with_gate(Arc::new(gate));
        if let (Some(gate), Some(gated)) = (state.gate(), &state.gated) {
            reconciler = Some(Reconciler::spawn(Arc::clone(gate), Arc::clone(gated)));
        }
    }
    let app = router(state.clone(), settings);
    let (shutdown, signal) = watch::channel(false);
    let grace = settings.shutdown_grace;
    let sweeper = crate::sweeper::spawn(
        Arc::clone(&store),
        settings.hold_sweep_interval,
        settings.hold_sweep_batch,
        signal.clone(),
    );
    let task = tokio::spawn(async move {
        let mut graceful_signal = signal.clone();
        let serve = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = graceful_signal.wait_for(|stop| *stop).await;
                tracing::info!("shutdown: no longer accepting connections; finishing in-flight requests");
            })
            .into_future();
        let mut grace_signal = signal;
        let outcome = tokio::select! {
            served = serve => served,
            () = async {
                let _ = grace_signal.wait_for(|stop| *stop).await;
                tokio::time::sleep(grace).await;
            } => {
                tracing::warn!(grace_ms = grace.as_millis(), "shutdown: grace period over, dropping requests still in flight");
                Ok(())
            }
        };
        if let Some(sweeper) = sweeper {
            // It stops at the signal; a sweep in progress finishes its transaction first.
            let _ = sweeper.await;
        }
        if let Some(reconciler) = reconciler {
            reconciler.stop().await;
        }
        tracing::info!("shutdown: flushing coalesced batches and closing the pool");
        store.close().await;
        tracing::info!("shutdown complete");
        outcome
    });
    Ok(RunningServer {
        addr,
        state,
        shutdown,
        task,
    })
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("received Ctrl-C"),
        () = terminate => tracing::info!("received SIGTERM"),
    }
}

/// Opens the configured store and applies migrations, logging where the data lives.
pub async fn open_store(settings: &Settings) -> anyhow::Result<AnyStore> {
    if settings.database_is_default {
        tracing::warn!(
            path = crate::config::DEFAULT_SQLITE_PATH,
            "no database URL configured (--database-url / STOCKGUARD_DATABASE_URL / DATABASE_URL / \
             config file): using the embedded SQLite file {}",
            crate::config::DEFAULT_SQLITE_PATH
        );
    }
    let store = connect(settings).await?;
    store.migrate().await.map_err(|e| {
        anyhow::anyhow!(
            "migrating {}: {}",
            settings.database,
            crate::problem::error_chain(&e)
        )
    })?;
    tracing::info!(backend = store.backend(), "database ready (migrations applied)");
    let report = store.probe().await.map_err(|e| {
        anyhow::anyhow!(
            "probing {}: {}",
            settings.database,
            crate::problem::error_chain(&e)
        )
    })?;
    let probe = &report.probe;
    tracing::info!(
        product = %probe.product,
        version = %probe.version,
        isolation = %probe.isolation,
        galera_nodes = probe.galera.as_ref().map(|g| g.cluster_size),
        skip_locked = %probe.skip_locked,
        nowait = %probe.nowait,
        for_no_key_update = %probe.for_no_key_update,
        "server probed"
    );
    for refusal in &report.refused {
        tracing::warn!(strategy = %refusal.strategy, "strategy refused: {refusal}");
    }
    Ok(store)
}

/// Why the service must not start with `default` as its default strategy, if it must not:
/// the adapter does not implement it, or the probe found the server does not honour a
/// locking clause it relies on.
pub fn default_strategy_refusal(
    default: Strategy,
    backend: &str,
    capabilities: &Capabilities,
    probe: Option<&ProbeReport>,
) -> Option<String> {
    if let Some(refusal) = probe
        .into_iter()
        .flat_map(|report| &report.refused)
        .find(|refusal| refusal.strategy == default)
    {
        return Some(format!(
            "the default strategy {default} cannot run safely on this {backend} server: {refusal}; \
             choose another with --default-strategy (supported here: {})",
            names(&capabilities.strategies)
        ));
    }
    (!capabilities.strategies.contains(&default)).then(|| {
        format!(
            "the default strategy {default} is not supported on {backend} (supported: {})",
            names(&capabilities.strategies)
        )
    })
}

fn names(strategies: &[Strategy]) -> String {
    strategies
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Opens the configured store as it is, for read-only commands: no migrations, and no
/// SQLite file is created where none exists (a missing database is an error, not an empty
/// one that reconciles).
pub async fn open_existing_store(settings: &Settings) -> anyhow::Result<AnyStore> {
    if let DatabaseTarget::Sqlite(path) = &settings.database {
        // The SQLite adapter opens with create-if-missing and has no read-only option, so
        // the file is checked here. (A file created between this check and the open would
        // still be opened; nothing here creates one.)
        anyhow::ensure!(
            path.is_file(),
            "no SQLite database at {}{}: this command never creates one (`stockguard migrate` \
             does); check --database-url / STOCKGUARD_DATABASE_URL / DATABASE_URL",
            path.display(),
            if settings.database_is_default {
                " (the default, used because no database URL is configured)"
            } else {
                ""
            }
        );
    }
    connect(settings).await
}

/// Connects, naming the target by its parsed parts only (never the URL, which may hold a
/// password) in the log and in the error.
async fn connect(settings: &Settings) -> anyhow::Result<AnyStore> {
    tracing::info!(database = %settings.database, "connecting");
    AnyStore::connect(settings).await.map_err(|e| {
        anyhow::anyhow!(
            "connecting to {}: {}",
            settings.database,
            crate::problem::error_chain(&e)
        )
    })
}

#[cfg(test)]
mod tests {
    use stockguard_core::{LockFeature, ServerProbe, StrategyRefusal, Support};

    use super::*;

    fn capabilities() -> Capabilities {
        Capabilities {
            strategies: Strategy::ALL.to_vec(),
            row_level_locking: true,
        }
    }

    /// A MySQL-protocol server that accepts `SKIP LOCKED` and returns the held row, as TiDB
    /// does: faked, since no such server installs here.
    fn tidb_like() -> ProbeReport {
        let ignored = Support::Ignored {
            how: "returned the row another transaction holds".into(),
        };
        ProbeReport {
            probe: ServerProbe {
                product: "TiDB".into(),
                version: "8.0.11-TiDB-v7.5.1".into(),
                isolation: "repeatable read".into(),
                galera: None,
                skip_locked: ignored.clone(),
                nowait: Support::Honoured,
                for_no_key_update: Support::NotApplicable,
            },
            refused: vec![StrategyRefusal {
                strategy: Strategy::Sharded,
                feature: LockFeature::SkipLocked,
                found: ignored,
            }],
        }
    }

    #[test]
    fn a_default_strategy_the_server_does_not_honour_stops_the_start_with_the_reason() {
        let mut capabilities = capabilities();
        capabilities.strategies.retain(|s| *s != Strategy::Sharded);
        let refusal = default_strategy_refusal(Strategy::Sharded, "mysql", &capabilities, Some(&tidb_like()))
            .expect("refused");
        assert!(
            refusal
                .contains("sharded` relies on FOR UPDATE SKIP LOCKED, which this server accepts but ignores"),
            "{refusal}"
        );
        assert!(refusal.contains("--default-strategy"), "{refusal}");
        assert_eq!(
            default_strategy_refusal(Strategy::Coalesced, "mysql", &capabilities, Some(&tidb_like())),
            None
        );
    }

    #[test]
    fn a_default_strategy_the_adapter_lacks_stops_the_start() {
        let mut capabilities = capabilities();
        capabilities.strategies.retain(|s| *s != Strategy::Sharded);
        let refusal =
            default_strategy_refusal(Strategy::Sharded, "sqlite", &capabilities, None).expect("refused");
        assert!(refusal.contains("not supported on sqlite"), "{refusal}");
    }
}
