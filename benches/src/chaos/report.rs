//! The run's report: report.json (every cell, every fault, every violation with examples)
//! and report.md (the tables docs/reliability.md quotes).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;

use super::cell::CellReport;
use super::checker::ViolationKind;
use super::schedule::FaultKind;

/// A whole chaos run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Wall-clock start (RFC 3339).
    pub started_at: String,
    /// The command line.
    pub command: String,
    /// `smoke`, `full` or `cells`.
    pub profile: String,
    /// The seeds the cells ran with.
    pub seeds: Vec<u64>,
    /// Seconds for the whole run.
    pub total_s: f64,
    /// Every cell that ran to a verdict.
    pub cells: Vec<CellReport>,
    /// Cells that could not run, with the reason.
    pub cell_errors: Vec<String>,
}

impl RunReport {
    /// True when every cell ran and found nothing wrong.
    pub fn passed(&self) -> bool {
        self.cell_errors.is_empty() && self.cells.iter().all(CellReport::passed)
    }
}

/// Writes report.json and report.md into `out`.
pub fn write(report: &RunReport, out: &Path) -> anyhow::Result<()> {
    let json = serde_json::to_string_pretty(report)?;
    std::fs::write(out.join("report.json"), json).context("writing report.json")?;
    std::fs::write(out.join("report.md"), markdown(report)).context("writing report.md")?;
    Ok(())
}

/// The Markdown report.
pub fn markdown(report: &RunReport) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Chaos run ({})\n", report.profile);
    let _ = writeln!(
        md,
        "Started {} · seeds {:?} · {:.0} s in all · `{}`\n",
        report.started_at, report.seeds, report.total_s, report.command
    );
    let _ = writeln!(
        md,
        "**Verdict: {}**\n",
        if report.passed() {
            "PASSED (0 violations)"
        } else {
            "FAILED"
        }
    );
    cell_table(&mut md, &report.cells);
    fault_table(&mut md, &report.cells);
    for error in &report.cell_errors {
        let _ = writeln!(md, "- CELL FAILED TO RUN: {error}");
    }
    violations(&mut md, &report.cells);
    md
}

fn cell_table(md: &mut String, cells: &[CellReport]) {
    md.push_str("## Cells\n\n");
    md.push_str(
        "| cell | seed | load s | requests | ops | acknowledged | refused | ambiguous → committed / not applied / open | \
         outcome_unknown | client timeouts | replays | faults observed | drain ms (SIGTERM) | audit | violations |\n",
    );
    md.push_str("|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|---|---:|\n");
    for cell in cells {
        let s = &cell.findings.stats;
        let fired: u64 = cell.fault_counts.values().map(|c| c.fired).sum();
        let observed: u64 = cell.fault_counts.values().map(|c| c.observed).sum();
        let drains = cell
            .drains_ms
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {} | {} | {} | {} | {} → {} / {} / {} | {} | {} | {} | {observed}/{fired} | {} | {} | {} |",
            cell.cell,
            cell.spec.seed,
            cell.load_s,
            s.requests,
            s.ops,
            s.acknowledged,
            s.refused,
            s.ambiguous,
            s.resolved_committed,
            s.resolved_not_applied,
            s.unresolved,
            s.outcome_unknown,
            s.client_timeouts,
            s.replays,
            if drains.is_empty() { "-".to_owned() } else { drains },
            match cell.audit_exit {
                Some(0) => "exit 0".to_owned(),
                other => format!("**exit {other:?}**"),
            },
            cell.findings.violation_count()
        );
    }
    md.push('\n');
}

fn fault_table(md: &mut String, cells: &[CellReport]) {
    if cells.is_empty() {
        return;
    }
    md.push_str("## Faults: observed / fired (effect)\n\n");
    md.push_str(
        "Effect: sessions gone, connections reset, requests abandoned, peak sessions waiting on held locks; 1 per pause, restart or refusal.\n\n",
    );
    md.push_str("| fault |");
    for cell in cells {
        let _ = write!(md, " {} s{} |", cell.cell, cell.spec.seed);
    }
    md.push_str("\n|---|");
    md.push_str(&"---|".repeat(cells.len()));
    md.push('\n');
    for kind in FaultKind::ALL {
        let _ = write!(md, "| {} |", kind.as_str());
        for cell in cells {
            match cell.fault_counts.get(&kind) {
                Some(c) => {
                    let _ = write!(md, " {}/{} ({}) |", c.observed, c.fired, c.effect);
                }
                None => md.push_str(" n/a |"),
            }
        }
        md.push('\n');
    }
    md.push('\n');
}

fn violations(md: &mut String, cells: &[CellReport]) {
    let failing: Vec<&CellReport> = cells.iter().filter(|c| !c.passed()).collect();
    if failing.is_empty() {
        return;
    }
    md.push_str("## Violations\n\n");
    for cell in failing {
        let _ = writeln!(
            md,
            "### {} (seed {})\n\nReproduce: `{}`\n",
            cell.cell, cell.spec.seed, cell.reproduce
        );
        for violation in &cell.findings.violations {
            let _ = writeln!(md, "- **{}**: {}", name(violation.kind), violation.count);
            for example in &violation.examples {
                let _ = writeln!(
                    md,
                    "  - {}{}",
                    example
                        .key
                        .as_deref()
                        .map(|k| format!("`{k}`: "))
                        .unwrap_or_default(),
                    example.detail
                );
                for record in &example.history {
                    let answer = match &record.answer {
                        super::history::Answer::Http { status, problem, .. } => {
                            format!("HTTP {status} {}", problem.as_deref().unwrap_or(""))
                        }
                        super::history::Answer::Transport { failure, .. } => format!("{failure:?}"),
                    };
                    let _ = writeln!(
                        md,
                        "    - {:?} {:?} {} × {} at {:.3}–{:.3} s: {answer}",
                        record.role,
                        record.kind,
                        record.sku,
                        record.quantity,
                        record.start_us as f64 / 1e6,
                        record.end_us as f64 / 1e6
                    );
                }
            }
        }
        md.push('\n');
    }
}

fn name(kind: ViolationKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{kind:?}"))
}
