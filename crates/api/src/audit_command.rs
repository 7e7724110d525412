//! `stockguard audit`: incremental by default, `--full` for everything.

use std::process::ExitCode;

use stockguard_api::{Settings, open_existing_store};
use stockguard_core::{DeductError, Discrepancy, InventoryStore};

/// `stockguard audit`: every SKU through its checkpoint, reading only the ledger rows after
/// it; then the checkpoints advance. Orders and holds are `--full`'s.
pub(crate) async fn incremental(settings: Settings) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&settings).await?;
    let report = store.audit_incremental().await;
    store.close().await;
    let report = report.map_err(|e| failed(&settings, &e))?;
    println!(
        "audit (incremental): {} SKUs, {} ledger rows read, {} vouched for by checkpoints, {} SKUs re-read from the start, {} discrepancies; {} checkpoints saved. Orders and holds are checked by `stockguard audit --full`",
        report.skus_checked,
        report.ledger_rows_verified,
        report.ledger_rows_checkpointed,
        report.skus_reread,
        report.discrepancies.len(),
        report.checkpoints_saved,
    );
    print_discrepancies(&report.discrepancies);
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `stockguard audit --full`: every ledger row, every order and every hold. Writes nothing.
pub(crate) async fn full(settings: Settings) -> anyhow::Result<ExitCode> {
    let store = open_existing_store(&settings).await?;
    let report = store.audit().await;
    store.close().await;
    let report = report.map_err(|e| failed(&settings, &e))?;
    println!(
        "audit: {} SKUs, {} ledger rows, {} discrepancies; {} orders, {} incomplete; {} holds, {} bad, {} SKUs with reserved off",
        report.skus_checked,
        report.ledger_rows,
        report.discrepancies.len(),
        report.orders_checked,
        report.incomplete_orders.len(),
        report.holds_checked,
        report.bad_holds.len(),
        report.reserved_mismatches.len()
    );
    print_discrepancies(&report.discrepancies);
    for order in &report.incomplete_orders {
        println!(
            "  order {}: {} ledger rows for {} lines",
            order.order_id, order.ledger_rows, order.line_count
        );
    }
    for hold in &report.bad_holds {
        println!(
            "  hold {} ({}): {}",
            hold.rows.hold_id, hold.rows.state, hold.problem
        );
    }
    for sku in &report.reserved_mismatches {
        println!(
            "  {}: reserved {} but active holds hold {}",
            sku.sku, sku.reserved, sku.active_holds
        );
    }
    Ok(if report.is_clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn failed(settings: &Settings, error: &DeductError) -> anyhow::Error {
    anyhow::anyhow!(
        "auditing {} failed: {}. The audit never creates or migrates a database: if this \
         one has no stockguard schema yet (or predates the audit checkpoint), `stockguard \
         migrate` brings it up to date",
        settings.database,
        stockguard_api::problem::error_chain(error)
    )
}

fn print_discrepancies(discrepancies: &[Discrepancy]) {
    for d in discrepancies {
        println!(
            "  {}: initial {} + ledger {} ({} rows) != stock {} (gap {}){}",
            d.snapshot.sku,
            d.snapshot.initial_stock,
            d.snapshot.ledger_delta_sum,
            d.snapshot.ledger_rows,
            d.snapshot.stock,
            d.ledger_gap,
            if d.negative_stock { ", NEGATIVE STOCK" } else { "" }
        );
        if d.missing_sku {
            println!("    the ledger names this SKU, but inventory has no row for it");
        }
    }
}
