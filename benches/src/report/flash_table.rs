//! report.md's flash-sale section: each path per database, and the ratios the flash-sale
//! issue sets targets for.

use std::fmt::Write as _;

use stockguard_testkit::Backend;

use super::Results;
use super::view::fmt_ms;
use crate::flash::{FlashPath, FlashResult};
use crate::flash_faults::FlashFaultResult;
use crate::flash_http::FlashHttpResult;
use crate::gate_overhead::{OVERHEAD_SKUS, OverheadGate, OverheadResult};
use crate::redis_lock::LockResult;

/// Gate + coalesced answers every attempt this many times faster than DB-only coalesced.
pub(super) const GATE_SPEEDUP_TARGET: f64 = 5.0;
/// The gate's refusals flow at this share of the bare Lua ceiling, in-process.
pub(super) const GATE_CEILING_TARGET: f64 = 0.5;
/// At low conflict the gate may cost at most 15 %: gated / plain ≥ this.
pub(super) const GATE_OVERHEAD_FLOOR: f64 = 0.85;

/// Writes the section: the sales, the gate at low conflict, and the seed's Redis lock
/// (nothing when none of them ran).
pub(super) fn flash_section(md: &mut String, results: &Results) -> std::fmt::Result {
    if let Some(reason) = &results.flash_skipped {
        writeln!(
            md,
            "\n## Flash sale: the Redis admission gate\n\nSkipped: {reason}."
        )?;
    }
    sales_tables(md, results)?;
    http_refusal_table(md, &results.flash_http)?;
    fault_table(md, &results.flash_faults)?;
    overhead_table(md, &results.gate_overhead)?;
    lock_table(md, &results.redis_lock)
}

/// The sales per database, and their ratios.
fn sales_tables(md: &mut String, results: &Results) -> std::fmt::Result {
    let (cases, ceiling_per_s) = (&results.flash, results.flash_ceiling_refusals_per_s);
    let Some(first) = cases.first() else {
        return Ok(());
    };
    writeln!(md, "\n## Flash sale: the Redis admission gate\n")?;
    writeln!(
        md,
        "One SKU, {} units, {} keyed one-unit attempts from {} clients, in-process. `gate_coalesced` \
         puts the Redis gate (docs/redis.md) in front of `coalesced`; `redis_lock` is the seed's layered lock: a \
         per-SKU Redis lock with a fencing token around the unguarded read-modify-write, waiting 0.5–2 ms when \
         the lock is held (its ledger rows carry no key). After every case: sold = supply, \
         stock 0, one ledger row per sale, the library's audit. The gate runs with its defaults, so the \
         refusals after sell-out are mostly answered by its sold-out hint, without a Redis call.\n",
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
            "| path | all answered in | answered/s | sold | refused | errors | database calls | p50 ms | p99 ms | refusals/s after sell-out (hint / no hint) | check |"
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
                case.gate_refusals_per_s.map_or("—".to_owned(), |r| format!(
                    "{r:.0} / {:.0}",
                    case.gate_refusals_without_hint_per_s.unwrap_or_default()
                )),
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
            if let (Some(refusals), Some(unhinted), Some(ceiling)) = (
                gate.gate_refusals_per_s,
                gate.gate_refusals_without_hint_per_s,
                ceiling_per_s,
            ) {
                let share = unhinted / ceiling;
                writeln!(
                    md,
                    "The gate's refusals, each a Redis call (hint off), reach **{share:.2}×** the bare Lua ceiling \
                     (target ≥ {GATE_CEILING_TARGET}×: {}); with the sold-out hint, {:.2}×.",
                    met(share >= GATE_CEILING_TARGET),
                    refusals / ceiling
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
        if let (Some(gate), Some(lock)) = (find(FlashPath::GateCoalesced), find(FlashPath::RedisLock)) {
            writeln!(
                md,
                "Against the seed's layered lock (`redis_lock`, fenced): **{:.2}×** faster.",
                lock.answer_all_s / gate.answer_all_s
            )?;
        }
        writeln!(md)?;
    }
    Ok(())
}

/// At least this share of the trivial-GET ceiling, for refusals over HTTP.
const HTTP_REFUSAL_FLOOR: f64 = 0.5;

/// Refusals over HTTP against the trivial-GET ceiling, per database.
fn http_refusal_table(md: &mut String, cases: &[FlashHttpResult]) -> std::fmt::Result {
    let Some(first) = cases.first() else {
        return Ok(());
    };
    writeln!(md, "\n## Refusals over HTTP\n")?;
    writeln!(
        md,
        "The sold-out flash SKU through the `stockguard` service with the gate in front: {} requesters of the \
         lean HTTP/1.1 client (one keep-alive connection each) send keyed one-unit deductions (a fresh \
         Idempotency-Key each) for {:.1} s, every one refused by the gate (409, no database call). Twice: with \
         the sold-out hint (the default; the service refuses without a Redis call) and without it (every refusal \
         asks Redis). Then `GET /healthz` for as long, same client and connections: the machine's \
         trivial-request ceiling. Target: refusals ≥ {HTTP_REFUSAL_FLOOR}× the ceiling.\n",
        first.spec.requesters,
        first.spec.duration.as_secs_f64()
    )?;
    writeln!(
        md,
        "| database | refusals/s (hint) | answered by the hint | refusals/s (no hint) | GET /healthz /s | refusals / ceiling | no hint / ceiling | check |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for case in cases {
        writeln!(
            md,
            "| {} | {:.0} | {:.1} % | {:.0} | {:.0} | **{:.2}×** ({}) | {:.2}× | {} |",
            case.spec.backend,
            case.refusals_per_s,
            case.hint_share * 100.0,
            case.refusals_without_hint_per_s,
            case.ceiling_per_s,
            case.share(),
            met(case.share() >= HTTP_REFUSAL_FLOOR),
            case.share_without_hint(),
            if case.failure().is_none() {
                "pass"
            } else {
                "**FAIL**"
            }
        )?;
    }
    Ok(())
}

/// The gate's sales under Redis faults.
fn fault_table(md: &mut String, cases: &[FlashFaultResult]) -> std::fmt::Result {
    let Some(first) = cases.first() else {
        return Ok(());
    };
    writeln!(md, "\n## Flash sale under faults\n")?;
    writeln!(
        md,
        "The gate + `coalesced` sale ({} units, {} attempts, {} clients) on a private Redis, faulted mid-sale, once \
         attempts for half the supply are taken: `redis_killed` (SIGKILL, restarted empty 500 ms later) and `sentinel_failover` \
         (SIGKILL of the primary of a primary + replica + 3 sentinels); the gate fails open meanwhile. And \
         `service_killed`: the sale over HTTP through a `stockguard serve` process with the gate (64 keep-alive \
         clients), SIGKILLed with admissions in flight and started again on its port; a client whose answer was \
         lost retries with its key until it gets a definite one. After the sale, a reconcile must leave the \
         counter at the database's stock; a last wave then sells what is left. Check: sold = supply, stock 0, \
         one ledger row per sale, audit clean; for `service_killed`, every key answered 200 is in the ledger and \
         no key answered 409 is.\n",
        first.spec.sale.supply, first.spec.sale.attempts, first.spec.sale.clients
    )?;
    writeln!(
        md,
        "| database | fault | fault lasted ms | straight to the database | retried with the key | sold in the sale | drift fixed by the reconcile | sold after it | sold = supply | reconciled after ms | check |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for case in cases {
        let sold = case.sold_in_sale + case.sold_after_reconcile;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            case.spec.sale.backend,
            case.spec.fault.name(),
            case.fault_ms,
            case.passed,
            case.retried,
            case.sold_in_sale,
            case.drift_units,
            case.sold_after_reconcile,
            if i64::try_from(sold).is_ok_and(|sold| sold == case.spec.sale.supply) {
                "yes"
            } else {
                "**NO**"
            },
            case.reconciled_after_ms,
            if case.failure().is_none() {
                "pass"
            } else {
                "**FAIL**"
            }
        )?;
    }
    Ok(())
}

/// The gate's cost where it saves nothing, per database: over every SKU, and scoped to hot
/// SKUs only.
fn overhead_table(md: &mut String, cases: &[OverheadResult]) -> std::fmt::Result {
    let Some(first) = cases.first() else {
        return Ok(());
    };
    writeln!(md, "\n## The Redis gate at low conflict\n")?;
    writeln!(
        md,
        "{OVERHEAD_SKUS} SKUs with far more stock than the run takes, keyed one-unit `guarded` deductions from \
         {} requesters, {:.1} s per case: without the gate, with the gate over every SKU (its counters primed, \
         as in a running deployment), and with the gate scoped to hot SKUs only (`--redis-gate-skus 'flash-*'`, \
         none of these SKUs), as docs/redis.md recommends. Target: the gate costs at most 15 % \
         (gated / plain ≥ {GATE_OVERHEAD_FLOOR}).\n",
        first.spec.requesters,
        first.spec.duration.as_secs_f64()
    )?;
    writeln!(
        md,
        "| database | guarded ok/s | gate, every SKU ok/s | every / plain | gate, hot SKUs only ok/s | hot-only / plain | p99 ms plain / every / hot-only | check |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut backends: Vec<Backend> = cases.iter().map(|c| c.spec.backend).collect();
    backends.dedup();
    for backend in backends {
        let find = |gate| {
            cases
                .iter()
                .find(|c| c.spec.backend == backend && c.spec.gate == gate)
        };
        let (Some(plain), Some(every), Some(hot_only)) = (
            find(OverheadGate::Off),
            find(OverheadGate::Every),
            find(OverheadGate::HotOnly),
        ) else {
            continue;
        };
        let (every_ratio, hot_ratio) = (every.per_s / plain.per_s, hot_only.per_s / plain.per_s);
        let clean = |c: &OverheadResult| c.problems.is_empty() && c.errors.is_empty();
        writeln!(
            md,
            "| {backend} | {:.0} | {:.0} | **{every_ratio:.2}×** ({}) | {:.0} | **{hot_ratio:.2}×** ({}) | {} / {} / {} | {} |",
            plain.per_s,
            every.per_s,
            met(every_ratio >= GATE_OVERHEAD_FLOOR),
            hot_only.per_s,
            met(hot_ratio >= GATE_OVERHEAD_FLOOR),
            fmt_ms(plain.p99_us),
            fmt_ms(every.p99_us),
            fmt_ms(hot_only.p99_us),
            if clean(plain) && clean(every) && clean(hot_only) {
                "pass"
            } else {
                "**FAIL**"
            }
        )?;
    }
    Ok(())
}

/// The seed's Redis lock, with and without the fence.
fn lock_table(md: &mut String, cases: &[LockResult]) -> std::fmt::Result {
    if cases.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## The seed's Redis lock, paused past its TTL\n")?;
    writeln!(
        md,
        "A per-SKU `SET NX PX` lock around the seed's unguarded read-modify-write; every 7th holder \
         stalls past the lock's TTL between its read and its write. `redis_lock_unfenced` is the \
         NEGATIVE CONTROL: the harness requires it to be caught. `redis_lock_fenced` adds only a \
         fencing token (registered before the read, checked in the write's transaction).\n"
    )?;
    writeln!(
        md,
        "| database | path | supply | sold | oversold | fenced out | pauses | audit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    for case in cases {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            case.spec.backend,
            case.spec.name(),
            case.supply,
            case.sold,
            case.oversold,
            case.fenced_out,
            case.pauses,
            match (case.audit_clean, case.spec.fenced) {
                (true, _) => "clean",
                (false, false) => "caught the lost updates (expected)",
                (false, true) => "**FAILED**",
            }
        )?;
    }
    Ok(())
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "**not met**" }
}
