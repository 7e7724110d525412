//! The service-memory section: the `stockguard serve` process's resident set as keep-alive
//! connections open, against the 64 MiB target at 1 000.

use std::fmt::Write as _;

use super::results::Results;
use crate::service_memory::{RSS_TARGET_CONNECTIONS, RSS_TARGET_MIB, kib_to_mib, within_target};

pub(super) fn service_memory_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if let Some(reason) = &results.service_memory_skipped {
        writeln!(
            md,
            "\n## Service memory vs open connections\n\nSkipped: {reason}."
        )?;
    }
    let Some(memory) = &results.service_memory else {
        return Ok(());
    };
    writeln!(md, "\n## Service memory vs open connections\n")?;
    writeln!(
        md,
        "The real `stockguard serve` (`{}`, a {} build) on a fresh {} database, its `VmRSS` and \
         `VmHWM` read from /proc at idle and with each number of keep-alive connections open; every \
         connection made a `GET /healthz` and a deduction first and stayed open through the reading. \
         Pool {}, concurrency limit {} (/v1 requests in flight, not connections; nothing caps \
         connections), open-files limit {}. Target: ≤ {RSS_TARGET_MIB} MiB resident at \
         {RSS_TARGET_CONNECTIONS} connections; a miss is reported, not a failure.\n",
        memory.binary,
        memory.build,
        memory.engine,
        memory.pool_size,
        memory.concurrency_limit,
        memory.open_files_limit,
    )?;
    writeln!(
        md,
        "| connections | RSS MiB | HWM MiB | service sockets | target | verdict |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---|---|")?;
    for reading in &memory.readings {
        let (target, verdict) = if reading.open_connections == RSS_TARGET_CONNECTIONS {
            let verdict = match within_target(reading.rss_kib) {
                true => "**pass**",
                false => "**MISS**",
            };
            (format!("≤ {RSS_TARGET_MIB} MiB"), verdict)
        } else {
            ("–".to_owned(), "–")
        };
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {} | {target} | {verdict} |",
            reading.open_connections,
            kib_to_mib(reading.rss_kib),
            kib_to_mib(reading.hwm_kib),
            reading.service_sockets,
        )?;
    }
    Ok(())
}
