//! results.json, report.md and the SVG plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use serde::Serialize;
use stockguard_core::Strategy;

use crate::db::{Backend, RawOp};
use crate::runner::{CaseResult, Transport, Variant};
use crate::workload::LevelSpec;

/// The machine the run happened on.
#[derive(Debug, Clone, Serialize)]
pub struct MachineInfo {
    /// Logical cores available to the process.
    pub cores: usize,
    /// CPU model, from /proc/cpuinfo.
    pub cpu: String,
    /// OS, from /etc/os-release.
    pub os: String,
    /// Kernel release.
    pub kernel: String,
}

impl MachineInfo {
    /// Reads what it can; unknown fields say so.
    pub fn detect() -> Self {
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpu = read("/proc/cpuinfo")
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let os = read("/etc/os-release")
            .lines()
            .find(|l| l.starts_with("PRETTY_NAME="))
            .map_or_else(
                || "unknown".to_owned(),
                |l| l.trim_start_matches("PRETTY_NAME=").trim_matches('"').to_owned(),
            );
        Self {
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            cpu,
            os,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
        }
    }
}

/// Everything a run produced.
#[derive(Debug, Clone, Serialize)]
pub struct Results {
    /// When the run started (UTC, RFC 3339).
    pub started_at: String,
    /// The command line.
    pub command: String,
    /// Profile name.
    pub profile: String,
    /// The seed every case used.
    pub seed: u64,
    /// The machine.
    pub machine: MachineInfo,
    /// Per database: version and durability settings.
    pub databases: BTreeMap<Backend, BTreeMap<String, String>>,
    /// Databases that were asked for but skipped, with the reason.
    pub skipped_databases: BTreeMap<Backend, String>,
    /// True when no server was reachable and the run fell back to embedded SQLite.
    pub sqlite_fallback: bool,
    /// Every case, in run order.
    pub cases: Vec<CaseResult>,
    /// Cases that failed to run at all (connection errors and the like).
    pub case_errors: Vec<String>,
}

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

fn level_key(level: &LevelSpec) -> String {
    level.to_string()
}

/// The HTTP / in-process throughput ratio the service should reach for the same strategy:
/// the service's own cost (HTTP parsing, auth, JSON, metrics) may take at most a fifth of
/// what the library alone achieves.
pub const HTTP_RATIO_TARGET: f64 = 0.8;

/// The in-process cases of one backend, grouped by level (in first-seen order) then variant.
/// HTTP cases have their own table (see [`http_table`]).
struct BackendView<'a> {
    backend: Backend,
    levels: Vec<(LevelSpec, usize)>,
    cases: BTreeMap<(String, usize), BTreeMap<Variant, &'a CaseResult>>,
}

impl<'a> BackendView<'a> {
    fn new(backend: Backend, cases: &'a [CaseResult]) -> Self {
        let mut levels: Vec<(LevelSpec, usize)> = Vec::new();
        let mut grouped: BTreeMap<(String, usize), BTreeMap<Variant, &CaseResult>> = BTreeMap::new();
        for case in cases
            .iter()
            .filter(|c| c.spec.backend == backend && c.spec.transport == Transport::InProcess)
        {
            let key = (level_key(&case.spec.level), case.spec.requesters);
            if !levels.iter().any(|(l, r)| level_key(l) == key.0 && *r == key.1) {
                levels.push((case.spec.level, case.spec.requesters));
            }
            grouped.entry(key).or_default().insert(case.spec.variant, case);
        }
        Self {
            backend,
            levels,
            cases: grouped,
        }
    }

    fn at(&self, level: &LevelSpec, requesters: usize) -> Option<&BTreeMap<Variant, &'a CaseResult>> {
        self.cases.get(&(level_key(level), requesters))
    }

    /// The level's conflict rate, the seed's own notion of "conflict": the fraction of
    /// `Optimistic` attempts whose version check missed. Lock-wait time was tried first, but on
    /// a loaded 2-core machine most requests wait ≥ 1 ms even at 100k SKUs, so it could not
    /// tell levels apart. Falls back to `Pessimistic`'s lock-wait rate when optimistic did not run.
    fn level_conflict_rate(&self, level: &LevelSpec, requesters: usize) -> Option<f64> {
        let cases = self.at(level, requesters)?;
        match cases.get(&Variant::Library(Strategy::Optimistic)) {
            Some(optimistic) => Some(optimistic.failed_attempt_rate),
            None => cases
                .get(&Variant::Library(Strategy::Pessimistic))
                .map(|c| c.conflict_rate),
        }
    }

    /// Levels with their conflict rate, ascending.
    fn levels_by_conflict(&self) -> Vec<(LevelSpec, usize, f64)> {
        let mut out: Vec<(LevelSpec, usize, f64)> = self
            .levels
            .iter()
            .filter_map(|(l, r)| self.level_conflict_rate(l, *r).map(|rate| (*l, *r, rate)))
            .collect();
        out.sort_by(|a, b| a.2.total_cmp(&b.2));
        out
    }

    /// The hot point: 1 SKU with the most requesters.
    fn hot_point(&self) -> Option<(LevelSpec, usize)> {
        self.levels
            .iter()
            .filter(|(l, _)| l.sku_count == 1)
            .max_by_key(|(_, r)| *r)
            .copied()
    }

    /// The lowest-conflict point: the most SKUs under a uniform skew.
    fn calm_point(&self) -> Option<(LevelSpec, usize)> {
        self.levels
            .iter()
            .filter(|(l, _)| l.sku_count > 1 && matches!(l.skew, crate::workload::Skew::Uniform))
            .max_by_key(|(l, r)| (l.sku_count, *r))
            .copied()
    }
}

fn shed_fraction(case: &CaseResult) -> f64 {
    let shed: u64 = ["lock_timeout", "conflict", "deadlock", "unavailable"]
        .iter()
        .map(|k| case.errors.get(k).copied().unwrap_or(0))
        .sum();
    let total = case.successes + case.refused + case.errors.values().sum::<u64>();
    if total == 0 {
        0.0
    } else {
        shed as f64 / total as f64
    }
}

fn ratio(a: Option<&&CaseResult>, b: Option<&&CaseResult>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.successes_per_s > 0.0).then(|| a.successes_per_s / b.successes_per_s)
}

fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}×"))
}

fn fmt_rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

fn fmt_ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn fmt_errors(case: &CaseResult) -> String {
    if case.errors.is_empty() {
        "–".to_owned()
    } else {
        case.errors
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn verdict(case: &CaseResult) -> String {
    let base = case.audit.verdict();
    if case.spec.variant.is_negative_control() {
        match base {
            "OVERSOLD" => format!(
                "**OVERSOLD** by {} units (expected: negative control)",
                case.audit.oversold_units
            ),
            "BROKEN" => format!(
                "**BROKEN**: {} lost-update units (expected: negative control)",
                case.audit.lost_update_units
            ),
            _ => "ok (race not triggered)".to_owned(),
        }
    } else if base == "ok" {
        "ok".to_owned()
    } else {
        format!("**{base}** (VIOLATION)")
    }
}

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
    std::fs::write(path, md).with_context(|| format!("writing {}", path.display()))
}

fn hot_point_table(
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

/// One row of the HTTP vs in-process table: an HTTP case and its in-process twin (same
/// backend, level, requesters and strategy, same run), if that ran.
#[derive(Debug, Clone, Copy)]
pub struct HttpComparison<'a> {
    /// The case over HTTP.
    pub http: &'a CaseResult,
    /// The same case in-process.
    pub in_process: Option<&'a CaseResult>,
}

impl HttpComparison<'_> {
    /// HTTP successes/s ÷ in-process successes/s.
    pub fn ratio(&self) -> Option<f64> {
        let in_process = self.in_process?;
        (in_process.successes_per_s > 0.0).then(|| self.http.successes_per_s / in_process.successes_per_s)
    }
}

/// The HTTP cases of `backend` in run order, each with its in-process twin.
pub fn http_comparisons(backend: Backend, cases: &[CaseResult]) -> Vec<HttpComparison<'_>> {
    let twin_of = |http: &CaseResult| {
        cases.iter().find(|c| {
            c.spec.transport == Transport::InProcess
                && c.spec.backend == http.spec.backend
                && c.spec.variant == http.spec.variant
                && c.spec.requesters == http.spec.requesters
                && level_key(&c.spec.level) == level_key(&http.spec.level)
        })
    };
    cases
        .iter()
        .filter(|c| c.spec.backend == backend && c.spec.transport == Transport::Http)
        .map(|http| HttpComparison {
            http,
            in_process: twin_of(http),
        })
        .collect()
}

fn http_table(md: &mut String, backend: Backend, cases: &[CaseResult]) -> anyhow::Result<()> {
    let rows = http_comparisons(backend, cases);
    writeln!(
        md,
        "### HTTP vs in-process
"
    )?;
    writeln!(
        md,
        "The same strategy driven through the `stockguard` service (HTTP/1.1 keep-alive, one connection \
         per requester, bearer-token auth, JSON) and through the library directly, in the same run. \
         The service runs in this process on its own runtime; requesters, service and database share \
         the machine's cores. Target: http / in-process ≥ {HTTP_RATIO_TARGET}.\n"
    )?;
    writeln!(
        md,
        "| level | requesters | strategy | in-process ok/s | http ok/s | http / in-process | in-process p99 ms | http p99 ms | ≥ {HTTP_RATIO_TARGET} | http errors | http audit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let mut met = 0;
    for row in &rows {
        let http = row.http;
        let ratio = row.ratio();
        let mark = match ratio {
            Some(r) if r >= HTTP_RATIO_TARGET => {
                met += 1;
                "✔"
            }
            Some(_) => "✘",
            None => "n/a",
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {mark} | {} | {} |",
            http.spec.level,
            http.spec.requesters,
            http.spec.variant,
            row.in_process
                .map_or_else(|| "not run".to_owned(), |c| fmt_rate(c.successes_per_s)),
            fmt_rate(http.successes_per_s),
            fmt_ratio(ratio),
            row.in_process
                .map_or_else(|| "–".to_owned(), |c| fmt_ms(c.latency_us_p99)),
            fmt_ms(http.latency_us_p99),
            fmt_errors(http),
            verdict(http),
        )?;
    }
    let compared = rows.iter().filter(|r| r.ratio().is_some()).count();
    writeln!(
        md,
        "\n{met} of {compared} compared cases reach the target (≥ {HTTP_RATIO_TARGET})."
    )?;
    Ok(())
}

fn ratios(md: &mut String, view: &BackendView<'_>) -> anyhow::Result<()> {
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

fn recommendation(md: &mut String, view: &BackendView<'_>) -> anyhow::Result<()> {
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

/// Writes the two plots per backend.
pub fn write_plots(results: &Results, dir: &Path) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    for backend in Backend::ALL {
        let view = BackendView::new(backend, &results.cases);
        let levels = view.levels_by_conflict();
        if levels.is_empty() {
            continue;
        }
        let mut throughput: BTreeMap<Variant, Vec<(f64, f64)>> = BTreeMap::new();
        let mut p99: BTreeMap<Variant, Vec<(f64, f64)>> = BTreeMap::new();
        for (level, requesters, rate) in &levels {
            for (variant, case) in view.at(level, *requesters).into_iter().flatten() {
                let x = rate * 100.0;
                throughput
                    .entry(*variant)
                    .or_default()
                    .push((x, case.successes_per_s.max(0.1)));
                p99.entry(*variant)
                    .or_default()
                    .push((x, (case.latency_us_p99 as f64 / 1000.0).max(0.01)));
            }
        }
        let name = format!("throughput_{backend}.svg");
        plot(
            &dir.join(&name),
            &format!("{backend}: successful deductions/s vs conflict rate"),
            "successful deductions/s (log)",
            &throughput,
        )?;
        written.push(name);
        let name = format!("p99_{backend}.svg");
        plot(
            &dir.join(&name),
            &format!("{backend}: p99 latency of successful deductions vs conflict rate"),
            "p99 latency, ms (log)",
            &p99,
        )?;
        written.push(name);
    }
    Ok(written)
}

fn plot(
    path: &Path,
    title: &str,
    y_label: &str,
    series: &BTreeMap<Variant, Vec<(f64, f64)>>,
) -> anyhow::Result<()> {
    let values = series.values().flatten().map(|p| p.1);
    let (min, max) = values.fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (y_low, y_high) = (min / 2.0, max * 2.0);
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(45)
        .y_label_area_size(80)
        .build_cartesian_2d(0f64..100f64, (y_low..y_high).log_scale())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("level conflict rate, % (optimistic version misses)")
        .y_desc(y_label)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (index, (variant, points)) in series.iter().enumerate() {
        let color = Palette99::pick(index).to_rgba();
        let mut points = points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let dashed = matches!(variant, Variant::Raw(_));
        let style = if dashed {
            color.stroke_width(1)
        } else {
            color.stroke_width(2)
        };
        chart
            .draw_series(LineSeries::new(points.clone(), style))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(variant.name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(points.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::audit::AuditOutcome;
    use crate::runner::{Bounds, CaseSpec, StockSizing};
    use crate::workload::QuantityDist;

    fn case(strategy: Strategy, transport: Transport, level: &str, successes_per_s: f64) -> CaseResult {
        CaseResult {
            spec: CaseSpec {
                backend: Backend::Postgres,
                variant: Variant::Library(strategy),
                transport,
                level: level.parse().unwrap(),
                requesters: 64,
                pool_size: 64,
                warmup: Duration::from_millis(100),
                bounds: Bounds {
                    duration: Duration::from_secs(1),
                    ops_per_requester: None,
                },
                quantity: QuantityDist::Fixed { units: 1 },
                stock: StockSizing::Auto { fill: 0.9 },
                seed: 7,
            },
            database: "sg_bench_test".to_owned(),
            successes: 100,
            refused: 0,
            errors: BTreeMap::new(),
            successes_per_s,
            refused_per_s: 0.0,
            selling_window_s: 1.0,
            elapsed_s: 1.0,
            attempts_per_success: 1.0,
            conflict_rate: 0.0,
            failed_attempt_rate: 0.0,
            waited_fraction: 0.0,
            latency_us_p50: 1_000,
            latency_us_p95: 2_000,
            latency_us_p99: 3_000,
            latency_us_max: 4_000,
            warmup_units_per_s: successes_per_s,
            total_initial_stock: 100,
            coalesced_batches: None,
            coalesced_mean_batch: None,
            audit: AuditOutcome::default(),
        }
    }

    #[test]
    fn each_http_case_is_compared_with_its_in_process_twin() {
        let cases = vec![
            case(Strategy::Guarded, Transport::InProcess, "1", 1000.0),
            case(Strategy::Guarded, Transport::Http, "1", 850.0),
            case(Strategy::Coalesced, Transport::InProcess, "1", 8000.0),
            case(Strategy::Coalesced, Transport::Http, "1", 4000.0),
            case(Strategy::Guarded, Transport::InProcess, "100000", 2000.0),
            // No in-process twin at this level.
            case(Strategy::Pessimistic, Transport::Http, "100000", 900.0),
        ];
        let rows = http_comparisons(Backend::Postgres, &cases);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].ratio(), Some(0.85));
        assert_eq!(rows[1].ratio(), Some(0.5));
        assert!(rows[2].in_process.is_none() && rows[2].ratio().is_none());
        assert!(http_comparisons(Backend::Mariadb, &cases).is_empty());

        let mut md = String::new();
        http_table(&mut md, Backend::Postgres, &cases).unwrap();
        assert!(md.contains("| 1xuniform | 64 | guarded | 1000 | 850 |"), "{md}");
        assert!(md.contains("| 0.85× | 3.00 | 3.00 | ✔ |"), "{md}");
        assert!(md.contains("| 0.50× | 3.00 | 3.00 | ✘ |"), "{md}");
        assert!(md.contains("| not run | 900 | n/a |"), "{md}");
        assert!(md.contains("1 of 2 compared cases reach the target"), "{md}");
    }
}
