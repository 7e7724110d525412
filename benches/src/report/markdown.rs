//! report.md: the run's header, the audit, and per backend its tables.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use stockguard_testkit::Backend;

use super::anchor_table::anchor_section;
use super::audit_table::audit_scaling_section;
use super::checkout_table::checkout_section;
use super::flash_table::flash_section;
use super::galera_table::galera_section;
use super::http_table::http_table;
use super::instances_table::instances_section;
use super::keyed_table::keyed_table;
use super::pg_ha_table::pg_ha_section;
use super::results::Results;
use super::service_memory_table::service_memory_section;
use super::tables::{hot_point_table, ratios, recommendation};
use super::view::{BackendView, fmt_errors, fmt_ms, fmt_rate, verdict};
use crate::case::{CaseResult, Transport};

/// Writes report.md.
pub fn write_markdown(results: &Results, path: &Path) -> anyhow::Result<()> {
    let mut md = String::new();
    let m = &results.machine;
    writeln!(md, "# stockguard benchmark report\n")?;
    writeln!(
        md,
        "- started: {} · profile `{}` · seed `{}` (rerun with `--seed {}`)",
        results.started_at, results.profile, results.seed, results.seed
    )?;
    writeln!(
        md,
        "- machine: {} · {} cores · {} · kernel {}",
        m.os, m.cores, m.cpu, m.kernel
    )?;
    writeln!(md, "- command: `{}`", results.command)?;
    if results.sqlite_fallback {
        writeln!(
            md,
            "\n> **No database server was reachable: this run fell back to embedded SQLite only.**"
        )?;
    }
    for (backend, reason) in &results.skipped_databases {
        writeln!(md, "- **skipped {backend}**: {reason}")?;
    }
    writeln!(md, "\n## Databases\n")?;
    for (backend, env) in &results.databases {
        let settings: Vec<String> = env
            .iter()
            .filter(|(k, _)| k.as_str() != "version")
            .map(|(k, v)| format!("`{k}={v}`"))
            .collect();
        writeln!(
            md,
            "- **{backend}**: {} — {}",
            env.get("version").map_or("?", String::as_str),
            settings.join(", ")
        )?;
    }

    writeln!(md, "\n## Audit\n")?;
    let violations: Vec<&CaseResult> = results
        .cases
        .iter()
        .filter(|c| !c.spec.variant.is_negative_control() && !c.audit.passed())
        .collect();
    let audited = results.cases.len();
    if violations.is_empty() {
        writeln!(
            md,
            "Every library strategy and raw baseline passed the audit in all {} of its cases \
             (stock ≥ 0; initial − final = Σ successful quantities = −Σ ledger deltas; ledger rows = \
             successes; exact sell-out).",
            results
                .cases
                .iter()
                .filter(|c| !c.spec.variant.is_negative_control())
                .count()
        )?;
    } else {
        writeln!(
            md,
            "**{} of {audited} cases VIOLATED an invariant:**\n",
            violations.len()
        )?;
        for case in violations {
            writeln!(
                md,
                "- `{}` on {} at {} × {} requesters (seed {}): {}",
                case.spec.path_name(),
                case.spec.backend,
                case.spec.level,
                case.spec.requesters,
                case.spec.seed,
                case.audit.messages.join("; ")
            )?;
        }
    }
    writeln!(
        md,
        "\nNegative control `unsafe_no_lock` (the seed article's read-check-write with no lock; \
         harness only, not in the library):\n"
    )?;
    for case in results
        .cases
        .iter()
        .filter(|c| c.spec.variant.is_negative_control())
    {
        writeln!(
            md,
            "- {} at {} × {}: {} — callers were told {} deductions succeeded; {}",
            case.spec.backend,
            case.spec.level,
            case.spec.requesters,
            verdict(case),
            case.successes,
            case.audit
                .messages
                .first()
                .map_or("the audit found nothing".to_owned(), Clone::clone)
        )?;
    }
    for error in &results.case_errors {
        writeln!(md, "- case error: {error}")?;
    }
    anchor_section(&mut md, results)?;

    for backend in Backend::ALL {
        let view = BackendView::new(backend, &results.cases);
        let has_http = results
            .cases
            .iter()
            .any(|c| c.spec.backend == backend && c.spec.transport == Transport::Http);
        if view.levels.is_empty() && !has_http {
            continue;
        }
        writeln!(md, "\n## {backend}\n")?;
        if has_http {
            http_table(&mut md, backend, &results.cases)?;
        }
        keyed_table(&mut md, backend, &results.cases)?;
        if view.levels.is_empty() {
            continue;
        }
        if let Some((level, requesters)) = view.hot_point() {
            hot_point_table(&mut md, &view, level, requesters)?;
        }
        ratios(&mut md, &view)?;
        writeln!(md, "\n### All cases\n")?;
        writeln!(
            md,
            "Level conflict rate = share of `optimistic` attempts whose version check missed at that \
             level (`pessimistic`'s share of deductions that waited ≥ 1 ms when optimistic did not \
             run). Own conflict rate = the strategy's own measure (retried, waited ≥ 1 ms, or \
             failed on contention).\n"
        )?;
        writeln!(
            md,
            "| level | requesters | level conflict | strategy | successes/s | refused/s | attempts/success | own conflict | p50 ms | p95 ms | p99 ms | max ms | errors | sold-out SKUs | audit |"
        )?;
        writeln!(
            md,
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
        )?;
        for (level, requesters) in &view.levels {
            let level_rate = view.level_conflict_rate(level, *requesters);
            for (variant, case) in view.at(level, *requesters).into_iter().flatten() {
                writeln!(
                    md,
                    "| {level} | {requesters} | {} | {variant} | {} | {} | {:.2} | {:.0}% | {} | {} | {} | {} | {} | {} | {} |",
                    level_rate.map_or("?".to_owned(), |r| format!("{:.0}%", r * 100.0)),
                    fmt_rate(case.successes_per_s),
                    fmt_rate(case.refused_per_s),
                    case.attempts_per_success,
                    case.conflict_rate * 100.0,
                    fmt_ms(case.latency_us_p50),
                    fmt_ms(case.latency_us_p95),
                    fmt_ms(case.latency_us_p99),
                    fmt_ms(case.latency_us_max),
                    fmt_errors(case),
                    case.audit.sold_out_skus,
                    verdict(case),
                )?;
            }
        }
        recommendation(&mut md, &view)?;
        writeln!(
            md,
            "\nPlots: [throughput vs conflict](throughput_{backend}.svg) · [p99 latency vs conflict](p99_{backend}.svg)"
        )?;
    }
    checkout_section(&mut md, &results.checkout)?;
    flash_section(&mut md, results)?;
    audit_scaling_section(&mut md, results)?;
    galera_section(&mut md, results)?;
    instances_section(&mut md, results)?;
    pg_ha_section(&mut md, results)?;
    service_memory_section(&mut md, results)?;
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}
