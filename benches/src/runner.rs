//! Runs one case end to end: fresh database, the deduction path under test (the library
//! in-process, the library over HTTP, or raw SQL), measurement and audit, drop.

use std::sync::Arc;

use anyhow::{Context, bail};
use stockguard_api::AnyStore;
use stockguard_core::{
    DeductError, DeductRequest, IdempotencyKey, InventoryStore, Quantity, SkuId, Strategy,
};

use crate::case::{CaseResult, CaseSpec, Deductor, Transport, Variant};
use crate::db::{FreshDatabase, RawPool};
use crate::measure::{coalescer_counters, measure, open_store, store_settings};
use crate::raw::RawOp;
use crate::tally::Outcome;
use crate::workload::{Request, sku_name};

/// The real library: `InventoryStore::deduct` with one strategy.
#[derive(Debug)]
pub struct LibraryDeductor {
    store: Arc<AnyStore>,
    skus: Arc<Vec<SkuId>>,
    strategy: Strategy,
}

impl LibraryDeductor {
    /// `strategy` on `store`, for the SKUs named by index in `skus`.
    pub fn new(store: Arc<AnyStore>, skus: Arc<Vec<SkuId>>, strategy: Strategy) -> Self {
        Self {
            store,
            skus,
            strategy,
        }
    }
}

impl Deductor for LibraryDeductor {
    async fn deduct(&self, request: &Request) -> Outcome {
        let quantity = Quantity::new(i64::from(request.units)).expect("workload quantities are in range");
        let mut deduction = DeductRequest::new(self.skus[request.sku_index].clone(), quantity, self.strategy);
        if let Some(key) = &request.key {
            let key = IdempotencyKey::parse(key.as_str()).expect("workload keys are valid");
            deduction = deduction.with_idempotency_key(key);
        }
        match self.store.deduct(deduction).await {
            Ok(receipt) if receipt.replayed => Outcome::Replayed,
            Ok(receipt) => Outcome::Success {
                attempts: receipt.attempts,
                lock_wait_us: receipt.lock_wait_us,
            },
            Err(DeductError::InsufficientStock { .. }) => Outcome::Refused,
            Err(DeductError::Conflict { attempts }) => Outcome::Error {
                kind: "conflict",
                attempts,
            },
            Err(error) => Outcome::Error {
                kind: error.kind(),
                attempts: 1,
            },
        }
    }
}

/// Raw SQL on a bare pool.
#[derive(Debug)]
pub struct RawDeductor {
    pool: RawPool,
    skus: Arc<Vec<String>>,
    op: RawOp,
}

impl Deductor for RawDeductor {
    async fn deduct(&self, request: &Request) -> Outcome {
        self.pool
            .raw_deduct(
                self.op,
                &self.skus[request.sku_index],
                i64::from(request.units),
                request.key.as_deref(),
            )
            .await
    }
}

/// Runs one case in a fresh database and drops the database afterwards, whatever happens.
pub async fn run_case(spec: CaseSpec) -> anyhow::Result<CaseResult> {
    check_transport(&spec)?;
    let database = FreshDatabase::create(spec.backend).await?;
    run_case_in(spec, database).await
}

/// Runs one case in a fresh database on the server at `admin_url` (a private server or
/// cluster), and drops the database afterwards.
pub async fn run_case_on(spec: CaseSpec, admin_url: &str) -> anyhow::Result<CaseResult> {
    check_transport(&spec)?;
    let database = FreshDatabase::create_on(spec.backend, admin_url).await?;
    run_case_in(spec, database).await
}

fn check_transport(spec: &CaseSpec) -> anyhow::Result<()> {
    if !spec.transport.carries(spec.variant) {
        bail!(
            "{} bypasses the library, so it cannot run over {}",
            spec.variant,
            spec.transport
        );
    }
    Ok(())
}

async fn run_case_in(spec: CaseSpec, database: FreshDatabase) -> anyhow::Result<CaseResult> {
    let result = run_in(&spec, &database).await;
    let name = database.name();
    database.drop_now().await?;
    let mut result = result?;
    result.database = name;
    if spec.variant != Variant::Library(Strategy::Coalesced) {
        result.coalesced_batches = None;
        result.coalesced_mean_batch = None;
    }
    Ok(result)
}

async fn run_in(spec: &CaseSpec, database: &FreshDatabase) -> anyhow::Result<CaseResult> {
    let sku_names: Vec<String> = (0..spec.level.sku_count).map(sku_name).collect();
    let settings = store_settings(spec, database)?;
    if spec.transport == Transport::Http {
        return crate::http::run_over_http(spec, database, settings, &sku_names).await;
    }
    let store = open_store(settings).await?;
    // A small admin pool for setup and the audit, separate from the pool under test.
    let admin = RawPool::connect(database, 2).await?;
    let outcome = match spec.variant {
        Variant::Library(strategy) => run_library(spec, &admin, store, strategy, &sku_names).await,
        Variant::Raw(op) => {
            // The library only created the schema; the raw paths get their own bare pool.
            store.close().await;
            run_raw(spec, database, &admin, op, &sku_names).await
        }
    };
    admin.close().await;
    outcome
}

async fn run_library(
    spec: &CaseSpec,
    admin: &RawPool,
    store: AnyStore,
    strategy: Strategy,
    sku_names: &[String],
) -> anyhow::Result<CaseResult> {
    let skus: Vec<SkuId> = sku_names
        .iter()
        .map(|s| SkuId::parse(s.clone()))
        .collect::<Result<_, _>>()
        .context("workload SKU names are valid SKU ids")?;
    let store = Arc::new(store);
    let deductor = Arc::new(LibraryDeductor::new(Arc::clone(&store), Arc::new(skus), strategy));
    let result = measure(spec, admin, deductor, sku_names, || coalescer_counters(&store)).await;
    store.close().await;
    result
}

async fn run_raw(
    spec: &CaseSpec,
    database: &FreshDatabase,
    admin: &RawPool,
    op: RawOp,
    sku_names: &[String],
) -> anyhow::Result<CaseResult> {
    let pool = RawPool::connect(database, spec.pool_size).await?;
    let deductor = Arc::new(RawDeductor {
        pool: pool.clone(),
        skus: Arc::new(sku_names.to_vec()),
        op,
    });
    let result = measure(spec, admin, deductor, sku_names, || (0, 0)).await;
    pool.close().await;
    result
}
