//! The engine without a database: one deduction on the in-memory backend, per strategy, keyed
//! and unkeyed, so the engine's own cost per request (keys, the retry loop, landing, the
//! receipt, the coalescer's handoff) shows apart from any database's. Criterion times it; a
//! counting global allocator gives allocations and bytes per deduction, printed as a table and
//! written to `target/engine-memory/allocations.json`.
//!
//! Every case gets a fresh store with one SKU stocked far beyond what a run deducts, so a
//! refusal is never what is measured, and every answer is checked to be a receipt. Requests
//! are built outside the measured part: the client makes them, the engine's cost is measured.
//!
//! Criterion's times include the counting allocator's cost (a few atomic adds per allocation
//! and free); the allocation figures and callgrind's instruction counts
//! (`benches/engine-instructions.sh`) are the repeatable ones.

use std::alloc::System;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use serde::Serialize;
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use stockguard_core::memory::{MemoryConfig, MemoryStore};
use stockguard_core::{
    DeductRequest, IdempotencyKey, InventoryStore, Quantity, Receipt, STOCK_MAX, SkuId, Strategy,
};
use tokio::runtime::Runtime;
use tokio::task::JoinSet;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Deductions joined at once in the coalesced group-commit case: half the coalescer's default
/// batch size (128), so they land as one batch, as a hot SKU's concurrent requests would.
const JOINED_DEDUCTIONS: usize = 64;

/// Deductions the allocation figures are averaged over: enough that the ledger's amortised
/// growth (a Vec and hash maps that double) averages out instead of landing on a few samples.
const COUNTED_DEDUCTIONS: usize = 10_000;

/// Deductions run before counting, so that state built on first use (the SKU's coalescer
/// queue, the runtime's timer wheel) is not charged to the counted ones.
const WARM_UP_DEDUCTIONS: usize = 1_000;

/// Whether each request carries a client key (a fresh one each time) or lets the engine make one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
enum Keying {
    Keyed,
    Unkeyed,
}

impl Keying {
    const BOTH: [Keying; 2] = [Keying::Keyed, Keying::Unkeyed];

    fn as_str(self) -> &'static str {
        match self {
            Keying::Keyed => "keyed",
            Keying::Unkeyed => "unkeyed",
        }
    }
}

/// One measured case: a strategy, keyed or not, and how many deductions run at once.
#[derive(Debug, Clone, Copy)]
struct Case {
    strategy: Strategy,
    keying: Keying,
    joined_deductions: usize,
}

impl Case {
    fn name(self) -> String {
        if self.joined_deductions == 1 {
            format!("{}/{}", self.strategy, self.keying.as_str())
        } else {
            format!(
                "{}_x{}/{}",
                self.strategy,
                self.joined_deductions,
                self.keying.as_str()
            )
        }
    }
}

/// Every case: each strategy the memory store offers (all but `Sharded`) keyed and unkeyed,
/// one deduction at a time, then `Coalesced` with [`JOINED_DEDUCTIONS`] at once.
fn cases(runtime: &Runtime) -> Vec<Case> {
    let (probe, _) = runtime.block_on(stocked_store());
    let strategies = probe.capabilities().strategies;
    let mut cases = Vec::new();
    for strategy in strategies {
        for keying in Keying::BOTH {
            cases.push(Case {
                strategy,
                keying,
                joined_deductions: 1,
            });
        }
    }
    for keying in Keying::BOTH {
        cases.push(Case {
            strategy: Strategy::Coalesced,
            keying,
            joined_deductions: JOINED_DEDUCTIONS,
        });
    }
    cases
}

/// The requests of one case: one unit of one SKU, with a fresh key each when keyed.
struct Requests {
    sku: SkuId,
    case: Case,
    keys_issued: u64,
}

impl Requests {
    fn new(sku: SkuId, case: Case) -> Self {
        Self {
            sku,
            case,
            keys_issued: 0,
        }
    }

    fn one(&mut self) -> DeductRequest {
        let one_unit = Quantity::new(1).expect("1 is a valid quantity");
        let request = DeductRequest::new(self.sku.clone(), one_unit, self.case.strategy);
        match self.case.keying {
            Keying::Unkeyed => request,
            Keying::Keyed => {
                self.keys_issued += 1;
                let key = IdempotencyKey::parse(format!("bench-{}", self.keys_issued)).expect("a valid key");
                request.with_idempotency_key(key)
            }
        }
    }

    /// The requests of one step of the case: [`Case::joined_deductions`] of them.
    fn step(&mut self) -> Vec<DeductRequest> {
        (0..self.case.joined_deductions).map(|_| self.one()).collect()
    }
}

/// A single-threaded runtime: the engine's cost alone, without work stealing across cores
/// (the machine's second core is someone else's).
fn current_thread_runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime")
}

/// A fresh store with one SKU holding the most stock a SKU may hold: no run comes near it.
async fn stocked_store() -> (Arc<MemoryStore>, SkuId) {
    let store = MemoryStore::connect(MemoryConfig::default())
        .await
        .expect("open the memory store");
    store.migrate().await.expect("migrate the memory store");
    let sku = SkuId::parse("engine-bench").expect("a valid SKU id");
    store
        .create_sku(&sku, STOCK_MAX)
        .await
        .expect("create the bench SKU");
    (Arc::new(store), sku)
}

async fn deduct_one(store: &MemoryStore, request: DeductRequest) -> Receipt {
    store
        .deduct(request)
        .await
        .expect("a deduction with ample stock succeeds")
}

/// Runs `requests` as concurrent tasks and waits for every receipt.
async fn deduct_joined(store: &Arc<MemoryStore>, requests: Vec<DeductRequest>) {
    let mut tasks = JoinSet::new();
    for request in requests {
        let store = Arc::clone(store);
        tasks.spawn(async move { deduct_one(&store, request).await });
    }
    while let Some(joined) = tasks.join_next().await {
        joined.expect("a deduction task panicked");
    }
}

async fn deduct_step(store: &Arc<MemoryStore>, mut step: Vec<DeductRequest>) {
    if step.len() == 1 {
        let request = step.pop().expect("one request");
        deduct_one(store, request).await;
    } else {
        deduct_joined(store, step).await;
    }
}

fn assert_clean_audit(runtime: &Runtime, store: &MemoryStore) {
    let report = runtime.block_on(store.audit()).expect("audit");
    assert!(report.is_clean(), "audit after the engine bench: {report:?}");
}

fn engine_memory(c: &mut Criterion) {
    let runtime = current_thread_runtime();
    let mut group = c.benchmark_group("engine_memory");
    for case in cases(&runtime) {
        let (store, sku) = runtime.block_on(stocked_store());
        let mut requests = Requests::new(sku, case);
        let deductions_per_iteration = u64::try_from(case.joined_deductions).expect("a small count");
        group.throughput(Throughput::Elements(deductions_per_iteration));
        group.bench_function(case.name(), |b| {
            if case.joined_deductions == 1 {
                b.to_async(&runtime).iter_batched(
                    || requests.one(),
                    |request| deduct_one(&store, request),
                    BatchSize::SmallInput,
                );
            } else {
                b.to_async(&runtime).iter_batched(
                    || requests.step(),
                    |step| deduct_joined(&store, step),
                    BatchSize::SmallInput,
                );
            }
        });
        assert_clean_audit(&runtime, &store);
        runtime.block_on(store.close());
    }
    group.finish();
}

/// Allocator figures for one case, per deduction.
#[derive(Debug, Serialize)]
struct AllocationFigures {
    case: String,
    strategy: Strategy,
    keying: Keying,
    joined_deductions: usize,
    deductions_counted: usize,
    allocations_per_deduction: f64,
    reallocations_per_deduction: f64,
    /// Bytes requested by allocations and by reallocations that grew a block.
    bytes_allocated_per_deduction: f64,
}

#[derive(Debug, Serialize)]
struct AllocationReport {
    measured_at: String,
    warm_up_deductions: usize,
    cases: Vec<AllocationFigures>,
}

fn per_deduction(total: usize, deductions: usize) -> f64 {
    // Counts far below 2^52: the conversions are exact.
    total as f64 / deductions as f64
}

/// Counts the allocations of [`COUNTED_DEDUCTIONS`] deductions of `case` on a fresh store.
/// Nothing else runs meanwhile (one thread, criterion not started), so the process-wide
/// counters see only the engine and the store.
fn count_allocations(runtime: &Runtime, case: Case) -> AllocationFigures {
    let (store, sku) = runtime.block_on(stocked_store());
    let mut requests = Requests::new(sku, case);
    let steps_of = |deductions: usize| deductions / case.joined_deductions;
    runtime.block_on(async {
        for _ in 0..steps_of(WARM_UP_DEDUCTIONS) {
            deduct_step(&store, requests.step()).await;
        }
    });
    let steps: Vec<Vec<DeductRequest>> = (0..steps_of(COUNTED_DEDUCTIONS))
        .map(|_| requests.step())
        .collect();
    let deductions_counted = steps.len() * case.joined_deductions;
    let region = Region::new(GLOBAL);
    runtime.block_on(async {
        for step in steps {
            deduct_step(&store, step).await;
        }
    });
    let change = region.change();
    assert_clean_audit(runtime, &store);
    runtime.block_on(store.close());
    AllocationFigures {
        case: case.name(),
        strategy: case.strategy,
        keying: case.keying,
        joined_deductions: case.joined_deductions,
        deductions_counted,
        allocations_per_deduction: per_deduction(change.allocations, deductions_counted),
        reallocations_per_deduction: per_deduction(change.reallocations, deductions_counted),
        bytes_allocated_per_deduction: per_deduction(change.bytes_allocated, deductions_counted),
    }
}

/// Where the JSON goes: `target/engine-memory/` at the workspace root, whatever target
/// directory cargo builds into (a shared one must not collect one checkout's results).
fn output_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/core sits two levels below the workspace root")
        .join("target/engine-memory")
}

fn report_allocations() {
    let runtime = current_thread_runtime();
    let figures: Vec<AllocationFigures> = cases(&runtime)
        .into_iter()
        .map(|case| count_allocations(&runtime, case))
        .collect();
    println!(
        "\nAllocations per deduction, in-memory store, averaged over {COUNTED_DEDUCTIONS} deductions \
         after {WARM_UP_DEDUCTIONS} warm-up:\n"
    );
    println!("| case | allocations | reallocations | bytes allocated |");
    println!("|---|---:|---:|---:|");
    for row in &figures {
        println!(
            "| {} | {:.2} | {:.3} | {:.0} |",
            row.case,
            row.allocations_per_deduction,
            row.reallocations_per_deduction,
            row.bytes_allocated_per_deduction
        );
    }
    let report = AllocationReport {
        measured_at: chrono::Utc::now().to_rfc3339(),
        warm_up_deductions: WARM_UP_DEDUCTIONS,
        cases: figures,
    };
    let dir = output_dir();
    std::fs::create_dir_all(&dir).expect("create target/engine-memory");
    let path = dir.join("allocations.json");
    let json = serde_json::to_string_pretty(&report).expect("serialize the allocation report");
    std::fs::write(&path, json + "\n").expect("write allocations.json");
    println!("\nwrote {}\n", path.display());
}

criterion_group! {
    name = engine_memory_group;
    // Short: the whole bench runs in a couple of minutes on a shared 2-core machine. The
    // command line overrides each (`-- --measurement-time 5`).
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = engine_memory
}

fn main() {
    // First, while criterion has started nothing that could allocate beside the engine.
    report_allocations();
    engine_memory_group();
    Criterion::default().configure_from_args().final_summary();
}
