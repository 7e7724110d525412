//! The `http` transport: the same case, driven through the `stockguard` HTTP service.
//!
//! Per case the harness opens the library store on the case's fresh database from the same
//! store settings as the in-process path (same adapter configuration, same pool size), wraps
//! it in the service (`stockguard_api::start`, bound to `127.0.0.1:0`, with an auth token so
//! the auth check is part of every request), and drives it with a lean hyper client over
//! HTTP/1.1 keep-alive, one connection per requester (lean.rs). After the case, the same
//! client measures the trivial-request ceiling (`GET /healthz`) for as long as the case ran. The service runs on its own tokio runtime with its own worker threads, so
//! client and server are scheduled like two processes; both share the machine's cores (and
//! the database's). Warm-up, stock sizing, the seeded request streams and the in-database
//! audit are the in-process path's own ([`crate::measure::measure`]).

mod classify;
mod client;
pub(crate) mod lean;
mod service;

use std::sync::Arc;

use anyhow::bail;
use stockguard_api::store::StoreSettings;
use stockguard_core::Strategy;

pub use classify::{Expected, UnexpectedResponse, classify_response};
pub use client::{HttpDeductor, deduct_body};
pub use lean::{CLIENT_CONNECT_TIMEOUT, CLIENT_REQUEST_TIMEOUT, LeanClient, healthz_ceiling};
pub use service::{SERVER_REQUEST_TIMEOUT, SERVER_SHUTDOWN_GRACE, ServiceUnderTest};

use crate::case::{CaseResult, CaseSpec, Variant};
use crate::db::{FreshDatabase, RawPool};
use crate::measure::{coalescer_counters, measure};

/// Runs one case over HTTP in `database` (which the caller drops afterwards).
pub(crate) async fn run_over_http(
    spec: &CaseSpec,
    database: &FreshDatabase,
    store_settings: StoreSettings,
    sku_names: &[String],
) -> anyhow::Result<CaseResult> {
    let Variant::Library(strategy) = spec.variant else {
        bail!(
            "{} bypasses the library, so it cannot run over http",
            spec.variant
        );
    };
    let service = ServiceUnderTest::start(spec, store_settings).await?;
    let outcome = drive_service(spec, database, &service, strategy, sku_names).await;
    // Shut down whatever happened, so the next case starts on a quiet machine.
    let stopped = service.shutdown().await;
    let result = outcome?;
    stopped?;
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
    let admin = RawPool::connect(database, 2).await?;
    let deductor = match HttpDeductor::new(service, sku_names, strategy, spec.requesters).await {
        Ok(deductor) => Arc::new(deductor),
        Err(error) => {
            admin.close().await;
            return Err(error);
        }
    };
    let store = service.store();
    let mut result = measure(spec, &admin, Arc::clone(&deductor), sku_names, || {
        coalescer_counters(&store)
    })
    .await;
    // The trivial-request ceiling: the same client, requesters and connections, as long as
    // the case's measured run.
    if let Ok(case) = &mut result {
        let window = std::time::Duration::from_secs_f64(case.elapsed_s.clamp(0.5, 30.0));
        match healthz_ceiling(deductor.client(), spec.requesters, window).await {
            Ok(per_s) => case.http_get_ceiling_per_s = Some(per_s),
            Err(error) => eprintln!("warning: the GET /healthz ceiling failed: {error:#}"),
        }
    }
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
