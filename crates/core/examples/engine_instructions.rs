//! A fixed number of deductions on the in-memory store, for `valgrind --tool=callgrind` to
//! count the engine's instructions without a database. `benches/engine-instructions.sh` runs
//! it at two counts and divides the difference, which cancels start-up and warm-up.
//!
//! ```text
//! engine_instructions [STRATEGY] [DEDUCTIONS] [--unkeyed]
//! ```
//!
//! STRATEGY defaults to `guarded`, DEDUCTIONS to 10000. Each request carries a fresh client
//! key unless `--unkeyed`. One request at a time on a current-thread runtime, so `coalesced`
//! measures its per-request cost (a batch of one). Exits 1 if any deduction fails, 2 on a
//! bad argument.

use std::process::ExitCode;

use stockguard_core::memory::{MemoryConfig, MemoryStore};
use stockguard_core::{DeductRequest, IdempotencyKey, InventoryStore, Quantity, STOCK_MAX, SkuId, Strategy};

const DEFAULT_DEDUCTIONS: u64 = 10_000;

/// Deductions before the counted ones, so that state built on first use (the SKU's coalescer
/// queue, the runtime's timer wheel, the ledger's first allocations) is built in both runs.
const WARM_UP_DEDUCTIONS: u64 = 1_000;

#[derive(Debug)]
struct Args {
    strategy: Strategy,
    deductions: u64,
    keyed: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        strategy: Strategy::Guarded,
        deductions: DEFAULT_DEDUCTIONS,
        keyed: true,
    };
    let mut positional = 0;
    for arg in std::env::args().skip(1) {
        if arg == "--unkeyed" {
            args.keyed = false;
            continue;
        }
        match positional {
            0 => args.strategy = arg.parse().map_err(|err| format!("strategy {arg:?}: {err}"))?,
            1 => args.deductions = arg.parse().map_err(|err| format!("deductions {arg:?}: {err}"))?,
            _ => return Err(format!("unexpected argument {arg:?}")),
        }
        positional += 1;
    }
    Ok(args)
}

/// Runs `count` deductions of one unit, keys numbered from `first_key`.
async fn deduct(
    store: &MemoryStore,
    sku: &SkuId,
    args: &Args,
    first_key: u64,
    count: u64,
) -> Result<(), String> {
    let one_unit = Quantity::new(1).map_err(|err| err.to_string())?;
    for key_number in first_key..first_key + count {
        let mut request = DeductRequest::new(sku.clone(), one_unit, args.strategy);
        if args.keyed {
            let key =
                IdempotencyKey::parse(format!("instructions-{key_number}")).map_err(|err| err.to_string())?;
            request = request.with_idempotency_key(key);
        }
        store
            .deduct(request)
            .await
            .map_err(|err| format!("deduction {key_number} failed: {err}"))?;
    }
    Ok(())
}

async fn run(args: &Args) -> Result<(), String> {
    let store = MemoryStore::connect(MemoryConfig::default())
        .await
        .map_err(|err| err.to_string())?;
    store.migrate().await.map_err(|err| err.to_string())?;
    if !store.capabilities().strategies.contains(&args.strategy) {
        return Err(format!("the memory store does not offer {}", args.strategy));
    }
    let sku = SkuId::parse("engine-instructions").map_err(|err| err.to_string())?;
    // The most a SKU may hold: no count comes near it, so no deduction is ever refused.
    store
        .create_sku(&sku, STOCK_MAX)
        .await
        .map_err(|err| err.to_string())?;
    deduct(&store, &sku, args, 0, WARM_UP_DEDUCTIONS).await?;
    deduct(&store, &sku, args, WARM_UP_DEDUCTIONS, args.deductions).await?;
    let left = store.stock(&sku).await.map_err(|err| err.to_string())?;
    store.close().await;
    let deducted = WARM_UP_DEDUCTIONS + args.deductions;
    let expected_left = STOCK_MAX - i64::try_from(deducted).map_err(|err| err.to_string())?;
    if left.stock != expected_left {
        return Err(format!("stock left {}, expected {expected_left}", left.stock));
    }
    eprintln!(
        "{} {}: {} deductions after {WARM_UP_DEDUCTIONS} warm-up",
        args.strategy,
        if args.keyed { "keyed" } else { "unkeyed" },
        args.deductions
    );
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\nusage: engine_instructions [STRATEGY] [DEDUCTIONS] [--unkeyed]");
            return ExitCode::from(2);
        }
    };
    // One thread: callgrind serialises threads anyway, and the count should be the engine's
    // work, not a scheduler's handoffs between workers.
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::FAILURE
        }
    }
}
