//! The Galera section: a hot SKU on a 3-node cluster by topology, beside the same three
//! instances on one standalone MariaDB.

use std::fmt::Write as _;

use crate::galera::{GaleraResult, Topology};

use super::results::Results;

pub(super) fn galera_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if results.galera.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## Galera: a hot SKU by topology\n")?;
    writeln!(
        md,
        "Three service instances (one store each, sharing the case's pool size) on a private \
         3-node MariaDB Galera cluster: *one_node* sends every write to node 1; *spread* puts \
         instance i on node i and round-robins requests over them; *sku_affinity* routes each \
         SKU to one node. *standalone* is the same three instances on one private MariaDB \
         without Galera. A write that conflicts with another node's fails at COMMIT \
         (certification) and is retried: *retries* counts those and deadlocks in the measured \
         run. *Unknown* must be 0.\n"
    )?;
    writeln!(
        md,
        "| strategy | SKUs | topology | deductions/s | ÷ standalone | p99 ms | retries | retries per success | unknown | errors | audit |"
    )?;
    writeln!(md, "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|")?;
    for case in &results.galera {
        let spec = &case.case.spec;
        let reference = reference(&results.galera, case);
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {:.1} | {} | {:.2} | {} | {} | {} |",
            spec.variant,
            spec.level.sku_count,
            case.topology.as_str(),
            case.case.successes_per_s,
            reference.map_or_else(
                || "—".to_owned(),
                |r| format!("{:.2}×", case.case.successes_per_s / r.max(1e-9))
            ),
            case.case.latency_us_p99 as f64 / 1000.0,
            case.certification_retries,
            case.certification_retries as f64 / case.case.successes.max(1) as f64,
            case.outcome_unknown,
            case.case.errors.values().sum::<u64>(),
            case.case.audit.verdict(),
        )?;
    }
    Ok(())
}

/// The standalone case's rate for the same strategy and SKU count.
fn reference(cases: &[GaleraResult], case: &GaleraResult) -> Option<f64> {
    let spec = &case.case.spec;
    cases
        .iter()
        .find(|other| {
            other.topology == Topology::Standalone
                && other.case.spec.variant == spec.variant
                && other.case.spec.level.sku_count == spec.level.sku_count
        })
        .map(|other| other.case.successes_per_s)
}
