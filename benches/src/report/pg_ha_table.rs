//! The PostgreSQL HA section: a standalone server against a Patroni cluster's primary.

use std::fmt::Write as _;

use crate::pg_ha::Setup;

use super::results::Results;
use super::setup_table::{SetupRow, setup_table};

pub(super) fn pg_ha_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if results.pg_ha.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## PostgreSQL high availability\n")?;
    writeln!(
        md,
        "The library in-process on a standalone private PostgreSQL (*standalone*) and on the \
         primary of a private Patroni cluster of two members (`.ci/pg-ha`): with a synchronous \
         standby in strict mode straight to the primary (*sync_direct*) and through haproxy \
         (*sync_haproxy*, the deployment docs/deploy.md recommends), and through haproxy with \
         Patroni's default asynchronous replication (*async_haproxy*, which loses acknowledged \
         commits at a failover: docs/distributed.md). Every server runs with the same settings \
         (`fsync = off`), so *÷ standalone* is the standby's round trip and the proxy hop.\n"
    )?;
    let rows: Vec<SetupRow<'_>> = results
        .pg_ha
        .iter()
        .map(|case| SetupRow {
            setup: case.setup.as_str(),
            reference: case.setup == Setup::Standalone,
            case: &case.case,
        })
        .collect();
    setup_table(md, "standalone", &rows)
}
