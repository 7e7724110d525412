//! The Galera section: a hot SKU on a 3-node cluster by topology, beside the same three
//! instances on one standalone MariaDB.

use std::fmt::Write as _;

use crate::galera::Topology;

use super::results::Results;
use super::setup_table::ratio_to_reference;

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
        writeln!(
            md,
            "| {} | {} | {} | {:.0} | {} | {:.1} | {} | {:.2} | {} | {} | {} |",
            spec.variant,
            spec.level.sku_count,
            case.topology.as_str(),
            case.case.successes_per_s,
            ratio_to_reference(
                results
                    .galera
                    .iter()
                    .filter(|other| other.topology == Topology::Standalone)
                    .map(|other| &other.case),
                &case.case
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
