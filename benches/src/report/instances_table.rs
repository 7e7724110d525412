//! The instances section: one, or three service instances behind one haproxy, by routing.

use std::fmt::Write as _;

use crate::instances::{InstancesResult, Setup};

use super::results::Results;

pub(super) fn instances_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if results.instances.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## Many service instances behind haproxy\n")?;
    writeln!(
        md,
        "The HTTP service on one PostgreSQL database behind a private haproxy: *one_instance* \
         is one instance; *round_robin* is three, each request to the next; *sku_affinity* is \
         three, each SKU to one of them by a hash of its path (`balance uri depth 3`, \
         docs/deploy/haproxy.cfg). The three share one instance's pool size, a third each, as \
         the server's connection limit makes a deployment size them. The proxy hop is in every set-up, so *÷ one instance* compares like with like.\n"
    )?;
    writeln!(
        md,
        "| strategy | SKUs | set-up | deductions/s | ÷ one instance | p99 ms | mean batch | errors | audit |"
    )?;
    writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|---|")?;
    for case in &results.instances {
        let spec = &case.case.spec;
        let reference = reference(&results.instances, case);
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {:.1} | {} | {} | {} |",
            spec.variant,
            spec.level.sku_count,
            case.setup.as_str(),
            case.case.successes_per_s,
            reference.map_or_else(
                || "—".to_owned(),
                |r| format!("{:.2}×", case.case.successes_per_s / r.max(1e-9))
            ),
            case.case.latency_us_p99 as f64 / 1000.0,
            case.case
                .coalesced_mean_batch
                .map_or_else(|| "—".to_owned(), |b| format!("{b:.1}")),
            case.case.errors.values().sum::<u64>(),
            case.case.audit.verdict(),
        )?;
    }
    Ok(())
}

/// The one-instance case's rate for the same strategy and SKU count.
fn reference(cases: &[InstancesResult], case: &InstancesResult) -> Option<f64> {
    let spec = &case.case.spec;
    cases
        .iter()
        .find(|other| {
            other.setup == Setup::OneInstance
                && other.case.spec.variant == spec.variant
                && other.case.spec.level.sku_count == spec.level.sku_count
        })
        .map(|other| other.case.successes_per_s)
}
