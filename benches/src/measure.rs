//! Measuring one case, whatever the deduction path and transport: the store it runs on,
//! the concurrent requesters, and warm-up, stock sizing, measured run and audit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use stockguard_api::AnyStore;
use stockguard_api::store::StoreSettings;

use crate::audit::audit;
use crate::case::{Bounds, CaseResult, CaseSpec, Deductor, StockSizing};
use crate::db::{FreshDatabase, RawPool};
use crate::key_contract::KeyContract;
use crate::tally::Tally;
use crate::workload::{Keying, LevelSpec, QuantityDist, RequestStream};

/// Warm-up SKUs hold this much, so the warm-up never sells out.
const WARMUP_STOCK: i64 = 1_000_000_000_000;
/// How long a library request waits for a pooled connection: the adapters' own default,
/// which every published figure was measured with.
const STORE_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// The store configuration of a case, shared by both transports so the service is measured
/// over exactly the store the in-process path gets.
pub fn store_settings(spec: &CaseSpec, database: &FreshDatabase) -> anyhow::Result<StoreSettings> {
    let mut settings = StoreSettings::new(database.target()?);
    settings.pool_size = spec.pool_size;
    settings.acquire_timeout = STORE_ACQUIRE_TIMEOUT;
    Ok(settings)
}

/// Opens and migrates a case's store.
pub async fn open_store(settings: StoreSettings) -> anyhow::Result<AnyStore> {
    let store = AnyStore::connect(settings).await.context("opening the store")?;
    store.migrate().await.context("migrating the store")?;
    // As the service does on start: a strategy the server does not honour leaves the
    // store's capabilities, so no case runs it.
    store.probe().await.context("probing the server")?;
    Ok(store)
}

/// Batches the store's coalescer has committed so far, and the requests they carried.
pub fn coalescer_counters(store: &AnyStore) -> (u64, u64) {
    let (stats, _queue_depth) = store.coalescer_stats();
    (
        stats.batches.load(Ordering::Relaxed),
        stats.batched_requests.load(Ordering::Relaxed),
    )
}

/// What one drive observed.
#[derive(Debug)]
pub struct Drive {
    /// The merged tally.
    pub tally: Tally,
    /// Wall time until the last requester finished.
    pub elapsed: Duration,
}

/// Runs `requesters` concurrent requesters, each issuing its own seeded request stream
/// back to back, until the bounds are reached.
pub async fn drive<D: Deductor>(
    deductor: Arc<D>,
    level: LevelSpec,
    quantity: QuantityDist,
    keying: Keying,
    seed: u64,
    requesters: usize,
    bounds: Bounds,
) -> anyhow::Result<Drive> {
    let started = Instant::now();
    let deadline = started + bounds.duration;
    let mut tasks = Vec::with_capacity(requesters);
    for index in 0..requesters {
        let deductor = Arc::clone(&deductor);
        tasks.push(tokio::spawn(async move {
            let mut stream = RequestStream::new(&level, quantity, keying, seed, index);
            let mut tally = Tally::default();
            let mut issued = 0u64;
            let mut contract = KeyContract::default();
            while Instant::now() < deadline && bounds.ops_per_requester.is_none_or(|max| issued < max) {
                let request = stream.next_request();
                let sent = Instant::now();
                let outcome = deductor.deduct(&request).await;
                let done = Instant::now();
                let outcome = contract.hold(&request, outcome);
                tally.record(
                    request.sku_index,
                    request.units,
                    outcome,
                    done - sent,
                    done - started,
                );
                issued += 1;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(task.await.context("a requester panicked")?);
    }
    Ok(Drive {
        tally,
        elapsed: started.elapsed(),
    })
}

/// Warm-up, stock sizing, measured run and audit of one case, whatever the deductor.
pub async fn measure<D: Deductor>(
    spec: &CaseSpec,
    admin: &RawPool,
    deductor: Arc<D>,
    sku_names: &[String],
    coalescer_counters: impl Fn() -> (u64, u64),
) -> anyhow::Result<CaseResult> {
    // Warm-up: plenty of stock, same workload (a different seed stream so the measured
    // sequence is the one the seed names).
    admin
        .reset_inventory(sku_names, &vec![WARMUP_STOCK; sku_names.len()])
        .await
        .context("creating the SKUs")?;
    let warmup = drive(
        Arc::clone(&deductor),
        spec.level,
        spec.quantity,
        spec.keying,
        spec.seed ^ 0x5741_524D_5550,
        spec.requesters,
        Bounds {
            duration: spec.warmup,
            ops_per_requester: None,
        },
    )
    .await?;
    let warm_units: i64 = warmup.tally.per_sku.values().map(|s| s.units_deducted).sum();
    let warmup_units_per_s = warm_units as f64 / warmup.elapsed.as_secs_f64().max(1e-3);
    let stocks = initial_stocks(spec, sku_names.len(), warmup_units_per_s);
    admin
        .reset_inventory(sku_names, &stocks)
        .await
        .context("resetting stock for the measured run")?;
    let (batches_before, batched_before) = coalescer_counters();
    let measured = drive(
        deductor,
        spec.level,
        spec.quantity,
        spec.keying,
        spec.seed,
        spec.requesters,
        spec.bounds,
    )
    .await?;
    let (batches_after, batched_after) = coalescer_counters();
    let batches = batches_after - batches_before;
    let rows = admin.audit_rows().await.context("reading the audit figures")?;
    let audit = audit(&rows, sku_names, &stocks, &measured.tally);
    let tally = &measured.tally;
    let window = if tally.successes == 0 {
        measured.elapsed
    } else {
        tally.last_success_at
    };
    let hist = &tally.success_latency_us;
    let percentile = |q: f64| {
        if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(q)
        }
    };
    Ok(CaseResult {
        spec: spec.clone(),
        database: String::new(),
        successes: tally.successes,
        refused: tally.refused,
        replayed: tally.replayed,
        errors: tally.errors.clone(),
        successes_per_s: tally.successes as f64 / window.as_secs_f64().max(1e-3),
        refused_per_s: tally.refused as f64 / measured.elapsed.as_secs_f64().max(1e-3),
        selling_window_s: window.as_secs_f64(),
        elapsed_s: measured.elapsed.as_secs_f64(),
        attempts_per_success: tally.attempts_per_success(),
        conflict_rate: tally.conflict_rate(),
        failed_attempt_rate: tally.failed_attempt_rate(),
        waited_fraction: if tally.successes == 0 {
            0.0
        } else {
            tally.waited_successes as f64 / tally.successes as f64
        },
        latency_us_p50: percentile(0.50),
        latency_us_p95: percentile(0.95),
        latency_us_p99: percentile(0.99),
        latency_us_max: if hist.is_empty() { 0 } else { hist.max() },
        warmup_units_per_s,
        total_initial_stock: stocks.iter().sum(),
        coalesced_batches: Some(batches),
        coalesced_mean_batch: Some(if batches == 0 {
            0.0
        } else {
            (batched_after - batched_before) as f64 / batches as f64
        }),
        http_get_ceiling_per_s: None,
        audit,
    })
}

/// Each SKU's stock for the measured run (see [`StockSizing`]).
fn initial_stocks(spec: &CaseSpec, sku_count: usize, warmup_units_per_s: f64) -> Vec<i64> {
    match spec.stock {
        StockSizing::Fixed { units } => vec![units; sku_count],
        StockSizing::Auto { fill } => {
            let expected_units = warmup_units_per_s * spec.bounds.duration.as_secs_f64() * fill;
            spec.level
                .access_probabilities()
                .into_iter()
                .map(|p| {
                    // Rounded, at least 1, and far below STOCK_MAX.
                    #[allow(clippy::cast_possible_truncation)]
                    let units = (expected_units * p).round().clamp(1.0, 1e12) as i64;
                    units
                })
                .collect()
        }
    }
}
