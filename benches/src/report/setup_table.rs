//! The table the cluster sections share: one row per case, by set-up, each against the
//! reference set-up's case with the same strategy and SKU count.

use std::fmt::Write as _;

use crate::case::CaseResult;

/// One row's set-up name and case, as a section's result holds them.
pub(super) struct SetupRow<'a> {
    /// The set-up's name in the report.
    pub setup: &'static str,
    /// Whether this is the reference set-up, the denominator of the ratio column.
    pub reference: bool,
    /// The harness's figures and audit.
    pub case: &'a CaseResult,
}

/// Writes the table: strategy, SKUs, set-up, rate, ÷ `reference_name`, p50, p99, mean batch,
/// errors and audit.
pub(super) fn setup_table(md: &mut String, reference_name: &str, rows: &[SetupRow<'_>]) -> std::fmt::Result {
    writeln!(
        md,
        "| strategy | SKUs | set-up | deductions/s | ÷ {reference_name} | p50 ms | p99 ms | mean batch | errors | audit |"
    )?;
    writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|---:|---|")?;
    for row in rows {
        let case = row.case;
        let references = rows
            .iter()
            .filter(|other| other.reference)
            .map(|other| other.case);
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {:.1} | {:.1} | {} | {} | {} |",
            case.spec.variant,
            case.spec.level.sku_count,
            row.setup,
            case.successes_per_s,
            ratio_to_reference(references, case),
            case.latency_us_p50 as f64 / 1000.0,
            case.latency_us_p99 as f64 / 1000.0,
            case.coalesced_mean_batch
                .map_or_else(|| "—".to_owned(), |b| format!("{b:.1}")),
            case.errors.values().sum::<u64>(),
            case.audit.verdict(),
        )?;
    }
    Ok(())
}

/// A "÷ reference" cell: `case`'s rate over that of the reference case with the same
/// strategy and SKU count, or "—" when there is none.
pub(super) fn ratio_to_reference<'a>(
    references: impl IntoIterator<Item = &'a CaseResult>,
    case: &CaseResult,
) -> String {
    references
        .into_iter()
        .find(|other| {
            other.spec.variant == case.spec.variant && other.spec.level.sku_count == case.spec.level.sku_count
        })
        .map_or_else(
            || "—".to_owned(),
            |other| format!("{:.2}×", case.successes_per_s / other.successes_per_s.max(1e-9)),
        )
}
