//! The per-backend tables of report.md: the hot point, the ratios, and the recommendation
//! by conflict band with its measured crossover.

use std::fmt::Write as _;

use stockguard_core::Strategy;

use super::view::{BackendView, fmt_errors, fmt_ms, fmt_rate, fmt_ratio, ratio, shed_fraction, verdict};
use crate::case::Variant;
use crate::raw::RawOp;
use crate::workload::LevelSpec;

/// Conflict bands of the recommendation table, as fractions: `[low, high)`.
pub const CONFLICT_BANDS: [(f64, f64); 5] = [
    (0.0, 0.05),
    (0.05, 0.15),
    (0.15, 0.30),
    (0.30, 0.60),
    (0.60, 1.01),
];

/// A case's library-or-raw strategy is out of the winner race when more than this fraction
/// of its requests failed on contention (NoWait sheds load rather than serving it).
pub const SHED_FRACTION_MAX: f64 = 0.01;

pub(super) fn hot_point_table(
    md: &mut String,
    view: &BackendView<'_>,
    level: LevelSpec,
    requesters: usize,
) -> anyhow::Result<()> {
    let Some(cases) = view.at(&level, requesters) else {
        return Ok(());
    };
    writeln!(
        md,
        "### Hot point: {} SKU × {requesters} requesters\n",
        level.sku_count
    )?;
    let raw_guarded = cases.get(&Variant::Raw(RawOp::Guarded));
    let raw_pessimistic = cases.get(&Variant::Raw(RawOp::Pessimistic));
    writeln!(
        md,
        "| strategy | successes/s | vs raw guarded | vs raw pessimistic | p50 ms | p99 ms | max ms | attempts/success | conflict | errors | audit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for (variant, case) in cases {
        writeln!(
            md,
            "| {variant} | {} | {} | {} | {} | {} | {} | {:.2} | {:.0}% | {} | {} |",
            fmt_rate(case.successes_per_s),
            fmt_ratio(ratio(Some(case), raw_guarded)),
            fmt_ratio(ratio(Some(case), raw_pessimistic)),
            fmt_ms(case.latency_us_p50),
            fmt_ms(case.latency_us_p99),
            fmt_ms(case.latency_us_max),
            case.attempts_per_success,
            case.conflict_rate * 100.0,
            fmt_errors(case),
            verdict(case),
        )?;
    }
    if let Some(coalesced) = cases.get(&Variant::Library(Strategy::Coalesced))
        && let Some(mean) = coalesced.coalesced_mean_batch
    {
        writeln!(
            md,
            "\n`coalesced` committed {} batches, {mean:.1} requests per batch on average.",
            coalesced.coalesced_batches.unwrap_or(0)
        )?;
    }
    Ok(())
}

pub(super) fn ratios(md: &mut String, view: &BackendView<'_>) -> anyhow::Result<()> {
    writeln!(md, "\n### Ratios (same run)\n")?;
    writeln!(
        md,
        "| point | coalesced / pessimistic | coalesced / guarded | sharded / pessimistic | sharded / guarded | guarded / raw_guarded (library overhead) | pessimistic / raw_pessimistic | coalesced p99 < pessimistic p99 |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut points = Vec::new();
    if let Some(hot) = view.hot_point() {
        points.push(("hot", hot));
    }
    if let Some(calm) = view.calm_point() {
        points.push(("low conflict", calm));
    }
    for (label, (level, requesters)) in points {
        let Some(cases) = view.at(&level, requesters) else {
            continue;
        };
        let get = |s: Strategy| cases.get(&Variant::Library(s));
        let p99 = match (get(Strategy::Coalesced), get(Strategy::Pessimistic)) {
            (Some(c), Some(p)) => format!(
                "{} ({} vs {} ms)",
                if c.latency_us_p99 < p.latency_us_p99 {
                    "yes"
                } else {
                    "no"
                },
                fmt_ms(c.latency_us_p99),
                fmt_ms(p.latency_us_p99)
            ),
            _ => "n/a".to_owned(),
        };
        writeln!(
            md,
            "| {label}: {level} × {requesters} | {} | {} | {} | {} | {} | {} | {p99} |",
            fmt_ratio(ratio(get(Strategy::Coalesced), get(Strategy::Pessimistic))),
            fmt_ratio(ratio(get(Strategy::Coalesced), get(Strategy::Guarded))),
            fmt_ratio(ratio(get(Strategy::Sharded), get(Strategy::Pessimistic))),
            fmt_ratio(ratio(get(Strategy::Sharded), get(Strategy::Guarded))),
            fmt_ratio(ratio(
                get(Strategy::Guarded),
                cases.get(&Variant::Raw(RawOp::Guarded))
            )),
            fmt_ratio(ratio(
                get(Strategy::Pessimistic),
                cases.get(&Variant::Raw(RawOp::Pessimistic))
            )),
        )?;
    }
    Ok(())
}

pub(super) fn recommendation(md: &mut String, view: &BackendView<'_>) -> anyhow::Result<()> {
    writeln!(md, "\n### Recommendation by conflict band ({})\n", view.backend)?;
    writeln!(
        md,
        "Winner = most successful deductions/s among library strategies that shed ≤ {:.0}% of requests \
         on contention (so `no_wait` wins only where it rarely refuses). Best per-request = the same \
         without `coalesced`.\n",
        SHED_FRACTION_MAX * 100.0
    )?;
    writeln!(
        md,
        "| conflict band | measured levels | winner | best per-request | optimistic / pessimistic |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let levels = view.levels_by_conflict();
    for (low, high) in CONFLICT_BANDS {
        let in_band: Vec<&(LevelSpec, usize, f64)> =
            levels.iter().filter(|(_, _, r)| *r >= low && *r < high).collect();
        let band = format!("{:.0}–{:.0}%", low * 100.0, (high * 100.0).min(100.0));
        if in_band.is_empty() {
            writeln!(md, "| {band} | none measured | – | – | – |")?;
            continue;
        }
        let mut winners = Vec::new();
        let mut per_request = Vec::new();
        let mut opt_vs_pess = Vec::new();
        let mut names = Vec::new();
        for (level, requesters, rate) in in_band {
            names.push(format!("{level} ({:.0}%)", rate * 100.0));
            let Some(cases) = view.at(level, *requesters) else {
                continue;
            };
            let eligible = |include_coalesced: bool| {
                cases
                    .iter()
                    .filter(|(v, c)| {
                        matches!(v, Variant::Library(s) if include_coalesced || *s != Strategy::Coalesced)
                            && shed_fraction(c) <= SHED_FRACTION_MAX
                            && c.audit.passed()
                    })
                    .max_by(|a, b| a.1.successes_per_s.total_cmp(&b.1.successes_per_s))
                    .map(|(v, c)| format!("{v} ({})", fmt_rate(c.successes_per_s)))
                    .unwrap_or_else(|| "–".to_owned())
            };
            winners.push(eligible(true));
            per_request.push(eligible(false));
            opt_vs_pess.push(fmt_ratio(ratio(
                cases.get(&Variant::Library(Strategy::Optimistic)),
                cases.get(&Variant::Library(Strategy::Pessimistic)),
            )));
        }
        writeln!(
            md,
            "| {band} | {} | {} | {} | {} |",
            names.join("; "),
            winners.join("; "),
            per_request.join("; "),
            opt_vs_pess.join("; ")
        )?;
    }
    // The crossover: the first level (by rising conflict) where optimistic falls below
    // pessimistic, bracketed by the level before it.
    let mut previous: Option<f64> = None;
    let mut crossover = None;
    for (level, requesters, rate) in &levels {
        let cases = view.at(level, *requesters);
        let r = cases.and_then(|c| {
            ratio(
                c.get(&Variant::Library(Strategy::Optimistic)),
                c.get(&Variant::Library(Strategy::Pessimistic)),
            )
        });
        if let Some(r) = r
            && r < 1.0
        {
            crossover = Some((previous, *rate, r));
            break;
        }
        previous = Some(*rate);
    }
    writeln!(md)?;
    match crossover {
        Some((Some(before), at, r)) => writeln!(
            md,
            "**Measured crossover ({}):** optimistic first falls below pessimistic between a level \
             conflict rate of {:.0}% and {:.0}% (at {:.0}% it reaches {:.2}× pessimistic).",
            view.backend,
            before * 100.0,
            at * 100.0,
            at * 100.0,
            r
        )?,
        Some((None, at, r)) => writeln!(
            md,
            "**Measured crossover ({}):** optimistic is already below pessimistic at the lowest measured \
             level ({:.0}% conflict, {:.2}×).",
            view.backend,
            at * 100.0,
            r
        )?,
        None => writeln!(
            md,
            "**Measured crossover ({}):** none — optimistic stayed at or above pessimistic at every \
             measured level (up to {:.0}% conflict).",
            view.backend,
            levels.last().map_or(0.0, |l| l.2 * 100.0)
        )?,
    }
    writeln!(
        md,
        "The seed's rule \"at 30% conflict choose pessimistic\" is checked against this line: it holds \
         on {} only if the crossover above lies near 30%.",
        view.backend
    )?;
    Ok(())
}
