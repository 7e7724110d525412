//! report.md's flash-sale section: each path per database, and the ratios the flash-sale
//! issue sets targets for.

use std::fmt::Write as _;

use stockguard_testkit::Backend;

use super::Results;
use super::view::fmt_ms;
use crate::flash::{FlashPath, FlashResult};

/// Gate + coalesced answers every attempt this many times faster than DB-only coalesced.
pub(super) const GATE_SPEEDUP_TARGET: f64 = 5.0;
/// The gate's refusals flow at this share of the bare Lua ceiling, in-process.
pub(super) const GATE_CEILING_TARGET: f64 = 0.5;

/// Writes the section (nothing when no flash-sale case ran).
pub(super) fn flash_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if let Some(reason) = &results.flash_skipped {
        writeln!(
            md,
            "\n## Flash sale: the Redis admission gate\n\nSkipped: {reason}."
        )?;
    }
    let (cases, ceiling_per_s) = (&results.flash, results.flash_ceiling_refusals_per_s);
    let Some(first) = cases.first() else {
        return Ok(());
    };
    writeln!(md, "\n## Flash sale: the Redis admission gate\n")?;
    writeln!(
        md,
        "One SKU, {} units, {} keyed one-unit attempts from {} clients, in-process. `gate_coalesced` \
         puts the Redis gate (docs/redis.md) in front of `coalesced`. After every case: sold = supply, \
         stock 0, one ledger row per sale, the library's audit.\n",
        first.spec.supply, first.spec.attempts, first.spec.clients
    )?;
    if let Some(ceiling) = ceiling_per_s {
        writeln!(
            md,
            "Ceiling: a bare Lua check-and-decrement on the same Redis, same clients, one multiplexed \
             connection: **{ceiling:.0} refusals/s**.\n"
        )?;
    }
    let mut backends: Vec<Backend> = cases.iter().map(|c| c.spec.backend).collect();
    backends.dedup();
    for backend in backends {
        writeln!(md, "### {backend}\n")?;
        writeln!(
            md,
            "| path | all answered in | answered/s | sold | refused | errors | database calls | p50 ms | p99 ms | refusals/s after sell-out | check |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        let mine: Vec<&FlashResult> = cases.iter().filter(|c| c.spec.backend == backend).collect();
        for case in &mine {
            writeln!(
                md,
                "| {} | {:.2} s | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
                case.spec.path.name(),
                case.answer_all_s,
                case.answered_per_s,
                case.sold,
                case.refused,
                case.errors.values().sum::<u64>(),
                case.database_calls,
                fmt_ms(case.p50_us),
                fmt_ms(case.p99_us),
                case.gate_refusals_per_s
                    .map_or("—".to_owned(), |r| format!("{r:.0}")),
                if case.passed() {
                    "pass".to_owned()
                } else {
                    format!("**FAIL**: {}", case.problems.join("; "))
                }
            )?;
        }
        let find = |path| mine.iter().find(|c| c.spec.path == path);
        if let (Some(gate), Some(db)) = (find(FlashPath::GateCoalesced), find(FlashPath::DbCoalesced)) {
            let speedup = db.answer_all_s / gate.answer_all_s;
            writeln!(
                md,
                "\nGate + coalesced answers every attempt **{speedup:.2}×** faster than DB-only coalesced \
                 (target ≥ {GATE_SPEEDUP_TARGET}×: {}).",
                met(speedup >= GATE_SPEEDUP_TARGET)
            )?;
            if let (Some(refusals), Some(ceiling)) = (gate.gate_refusals_per_s, ceiling_per_s) {
                let share = refusals / ceiling;
                writeln!(
                    md,
                    "The gate's refusals reach **{share:.2}×** the bare Lua ceiling (target ≥ {GATE_CEILING_TARGET}×: {}).",
                    met(share >= GATE_CEILING_TARGET)
                )?;
            }
        }
        if let (Some(gate), Some(seed)) = (find(FlashPath::GateCoalesced), find(FlashPath::DbPessimistic)) {
            writeln!(
                md,
                "Against the seed's pessimistic flow: **{:.2}×** faster.",
                seed.answer_all_s / gate.answer_all_s
            )?;
        }
        writeln!(md)?;
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
