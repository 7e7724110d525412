//! The audit-scaling section: how long each audit takes as the ledger grows, and what the
//! incremental audit saves.

use std::fmt::Write as _;

use super::results::Results;

/// The target: the incremental audit at 10M ledger rows ≥ 20× faster than the full audit.
pub const INCREMENTAL_SPEEDUP_TARGET: f64 = 20.0;

pub(super) fn audit_scaling_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if results.audit_scaling.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## Audit scaling\n")?;
    writeln!(
        md,
        "Each database's own SQL fills a fresh ledger; the first incremental audit reads it all and \
         stores its checkpoints; then the library makes the new deductions, and each audit runs once. \
         *Full audit* is `stockguard audit --full` (every row, orders and holds); *full reconcile* is \
         its ledger part alone, like for like with the incremental audit, which reads only the rows \
         after the checkpoints (plus a cheap check of every SKU). Target: incremental ≥ \
         {INCREMENTAL_SPEEDUP_TARGET}× faster than the full audit at 10M rows.\n"
    )?;
    writeln!(
        md,
        "| database | ledger rows | SKUs | new rows | generate | first incremental | full audit | full reconcile | incremental | rows read | full audit ÷ incremental | full reconcile ÷ incremental |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for case in &results.audit_scaling {
        writeln!(
            md,
            "| {} | {} | {} | {} | {:.1} s | {:.2} s | {:.3} s | {:.3} s | {:.3} s | {} | **{:.1}×** | {:.1}× |",
            case.engine,
            case.ledger_rows,
            case.sku_count,
            case.new_rows,
            case.generate_s,
            case.first_incremental_s,
            case.full_audit_s,
            case.full_reconcile_s,
            case.incremental_s,
            case.incremental_rows_read,
            case.speedup_vs_full_audit(),
            case.speedup_vs_full_reconcile(),
        )?;
    }
    Ok(())
}
