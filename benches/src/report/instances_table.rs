//! The instances section: one, or three service instances behind one haproxy, by routing.

use std::fmt::Write as _;

use crate::instances::Setup;

use super::results::Results;
use super::setup_table::{SetupRow, setup_table};

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
    let rows: Vec<SetupRow<'_>> = results
        .instances
        .iter()
        .map(|case| SetupRow {
            setup: case.setup.as_str(),
            reference: case.setup == Setup::OneInstance,
            case: &case.case,
        })
        .collect();
    setup_table(md, "one instance", &rows)
}
