//! The anchors section: what pgbench, sysbench and redis-benchmark reached on the same
//! servers in the same run, and every strategy's figure as a share of the ceiling it chases.

use std::fmt::Write as _;

use super::results::Results;
use super::view::{fmt_rate, fmt_ratio};
use crate::anchors::{AnchorCase, AnchorResult, STRETCH_CEILING, ceiling_for};
use crate::case::{CaseResult, Transport};
use crate::workload::{QuantityDist, Skew};

/// The PostgreSQL target: hot coalesced ≥ 1.0× the pgbench batch-32 ceiling.
pub const PG_BATCH_TARGET: f64 = 1.0;
/// The MariaDB target: hot coalesced ≥ 0.8× the sysbench batch-32 ceiling.
pub const MYSQL_BATCH_TARGET: f64 = 0.8;

/// One strategy case beside the anchor it chases.
#[derive(Debug, Clone, Copy)]
pub struct AnchorComparison<'a> {
    /// The library's (or a raw baseline's) case.
    pub case: &'a CaseResult,
    /// The same pattern done by the database alone, at the same SKUs and clients.
    pub ceiling: &'a AnchorResult,
    /// For the coalescing strategies: batch-128 from one client.
    pub stretch: Option<&'a AnchorResult>,
    /// For the coalescing strategies: the batch ceiling with as many units in flight as the
    /// case (`requesters / 32` clients of 32 units), when that divides.
    pub equal_in_flight: Option<&'a AnchorResult>,
}

impl AnchorComparison<'_> {
    /// The case's units/s ÷ the ceiling's units/s.
    pub fn ratio(&self) -> Option<f64> {
        (self.ceiling.units_per_s > 0.0).then(|| self.case.successes_per_s / self.ceiling.units_per_s)
    }

    /// The case's units/s ÷ the stretch ceiling's.
    pub fn stretch_ratio(&self) -> Option<f64> {
        let stretch = self.stretch?;
        (stretch.units_per_s > 0.0).then(|| self.case.successes_per_s / stretch.units_per_s)
    }

    /// The case's units/s ÷ the batch ceiling's at equal units in flight.
    pub fn equal_in_flight_ratio(&self) -> Option<f64> {
        let anchor = self.equal_in_flight?;
        (anchor.units_per_s > 0.0).then(|| self.case.successes_per_s / anchor.units_per_s)
    }
}

fn anchor<'a>(
    anchors: &'a [AnchorResult],
    engine: &str,
    case: AnchorCase,
    sku_count: usize,
    clients: usize,
) -> Option<&'a AnchorResult> {
    anchors.iter().find(|a| {
        a.engine == engine && a.case == case.name() && a.sku_count == sku_count && a.clients == clients
    })
}

/// Every keyed in-process case with one unit per request on uniformly spread SKUs, beside
/// the anchor at the same SKUs and clients (cases without one are left out).
pub fn anchor_comparisons(results: &Results) -> Vec<AnchorComparison<'_>> {
    results
        .cases
        .iter()
        .filter(|c| {
            c.spec.transport == Transport::InProcess
                && c.spec.keying.keyed
                && c.spec.level.skew == Skew::Uniform
                && c.spec.quantity == QuantityDist::Fixed { units: 1 }
        })
        .filter_map(|case| {
            let engine = case.spec.backend.as_str();
            let pattern = ceiling_for(case.spec.variant)?;
            let ceiling = anchor(
                &results.anchors,
                engine,
                pattern,
                case.spec.level.sku_count,
                case.spec.requesters,
            )?;
            let stretch = matches!(pattern, AnchorCase::Batch { .. })
                .then(|| anchor(&results.anchors, engine, STRETCH_CEILING, 1, 1))
                .flatten()
                .filter(|_| case.spec.level.sku_count == 1);
            let equal_in_flight = match pattern {
                AnchorCase::Batch { size } if case.spec.requesters.is_multiple_of(size as usize) => anchor(
                    &results.anchors,
                    engine,
                    pattern,
                    case.spec.level.sku_count,
                    case.spec.requesters / size as usize,
                ),
                _ => None,
            };
            Some(AnchorComparison {
                case,
                ceiling,
                stretch,
                equal_in_flight,
            })
        })
        .collect()
}

pub(super) fn anchor_section(md: &mut String, results: &Results) -> anyhow::Result<()> {
    if results.anchors.is_empty() && results.anchors_skipped.is_none() {
        return Ok(());
    }
    writeln!(md, "\n## Anchors: what the databases alone reach\n")?;
    writeln!(
        md,
        "Run in this same run, on the same servers, by the databases' own benchmark binaries with \
         `../shared/anchors/`'s SQL and Lua (copied in `benches/anchors/`): no application code. \
         Units/s counts the log rows each case wrote. The anchors write no idempotency key and never \
         sell out; the library's cases are keyed and sized to sell out near their end. `batchN` is N \
         one-unit deductions and N log rows in one transaction; `lua_*` is the bare check-and-decrement \
         against one counter (`_p16`: 16 calls in flight per connection).\n"
    )?;
    if let Some(reason) = &results.anchors_skipped {
        writeln!(md, "- **skipped**: {reason}\n")?;
    }
    for problem in &results.anchor_problems {
        writeln!(md, "- **check failed**: {problem}\n")?;
    }
    if !results.anchors.is_empty() {
        writeln!(md, "| engine | tool | case | SKUs | clients | txn/s | units/s |")?;
        writeln!(md, "|---|---|---|---|---|---|---|")?;
        for a in &results.anchors {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                a.engine,
                short_tool(&a.tool),
                a.case,
                a.sku_count,
                a.clients,
                fmt_rate(a.transactions_per_s),
                fmt_rate(a.units_per_s)
            )?;
        }
    }
    let rows = anchor_comparisons(results);
    if !rows.is_empty() {
        writeln!(
            md,
            "\n### Each strategy against the ceiling it chases\n\n\
             A per-request strategy chases the same pattern done by the database alone; `coalesced` and \
             `sharded` chase `batch32` at the same clients (targets: ≥ {PG_BATCH_TARGET:.1}× on PostgreSQL, \
             ≥ {MYSQL_BATCH_TARGET:.1}× on MariaDB at the hot SKU), and stretch for {} from one client. \
             The raw baselines show what a bare sqlx pool reaches with the same pattern.\n\n\
             `batch32` at the same clients keeps 32 times the case's units in flight: each of its \
             clients holds 32 units, each requester one. The last column is `batch32` at requesters \
             ÷ 32 clients, the same units in flight, so it tells the database's own batch cycle from \
             the library's concurrency.\n",
            STRETCH_CEILING.name()
        )?;
        writeln!(
            md,
            "| database | level | requesters | strategy | ok/s | chases | ceiling units/s | ratio | stretch ratio | ratio at equal units in flight |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
        for row in rows {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} {} | {} | {} | {} | {} |",
                row.case.spec.backend,
                row.case.spec.level,
                row.case.spec.requesters,
                row.case.spec.variant,
                fmt_rate(row.case.successes_per_s),
                row.ceiling.tool.split_whitespace().next().unwrap_or_default(),
                row.ceiling.case,
                fmt_rate(row.ceiling.units_per_s),
                fmt_ratio(row.ratio()),
                row.stretch
                    .map_or_else(|| "–".to_owned(), |_| fmt_ratio(row.stretch_ratio())),
                row.equal_in_flight.map_or_else(
                    || "–".to_owned(),
                    |a| format!(
                        "{} (÷ {} at {} clients)",
                        fmt_ratio(row.equal_in_flight_ratio()),
                        fmt_rate(a.units_per_s),
                        a.clients
                    )
                ),
            )?;
        }
    }
    redis_rows(md, results)
}

/// `pgbench 15.20` from `pgbench (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)`: the binary
/// and its version (results.json keeps the whole line).
fn short_tool(line: &str) -> String {
    let mut words = line.split_whitespace();
    let name = words.next().unwrap_or_default();
    match words.find(|w| w.starts_with(|c: char| c.is_ascii_digit())) {
        Some(version) => format!("{name} {version}"),
        None => name.to_owned(),
    }
}

/// The flash sale's refusals and the harness's own Lua ceiling against redis-benchmark's.
fn redis_rows(md: &mut String, results: &Results) -> anyhow::Result<()> {
    let refuse = |name: &str| {
        results
            .anchors
            .iter()
            .find(|a| a.engine == "redis" && a.case == name)
    };
    let Some(tool) = refuse("lua_refuse") else {
        return Ok(());
    };
    writeln!(
        md,
        "\nRedis, refusals at {} clients: redis-benchmark `lua_refuse` {}/s{}.",
        tool.clients,
        fmt_rate(tool.units_per_s),
        refuse("lua_refuse_p16").map_or_else(String::new, |p| format!(
            ", `lua_refuse_p16` {}/s",
            fmt_rate(p.units_per_s)
        ))
    )?;
    if let Some(own) = results.flash_ceiling_refusals_per_s {
        writeln!(
            md,
            "The harness's own Lua ceiling (one multiplexed connection, as the gate's) reached {}/s: {} of \
             redis-benchmark's one-call-per-connection figure.",
            fmt_rate(own),
            fmt_ratio(Some(own / tool.units_per_s))
        )?;
    }
    for sale in results
        .flash
        .iter()
        .filter(|s| s.gate_refusals_without_hint_per_s.is_some())
    {
        let per_s = sale.gate_refusals_without_hint_per_s.unwrap_or_default();
        writeln!(
            md,
            "- {} {}: the gate refused {}/s after sell-out with every refusal a Redis call (the sold-out \
             hint off), {} of redis-benchmark's `lua_refuse`.",
            sale.spec.backend,
            sale.spec.path.name(),
            fmt_rate(per_s),
            fmt_ratio(Some(per_s / tool.units_per_s))
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stockguard_core::Strategy;

    use super::*;
    use crate::report::view::sample_case as case;

    fn anchor_result(
        engine: &str,
        case: AnchorCase,
        sku_count: usize,
        clients: usize,
        units_per_s: f64,
    ) -> AnchorResult {
        AnchorResult {
            engine: engine.to_owned(),
            tool: "pgbench (PostgreSQL) 15.14".to_owned(),
            case: case.name(),
            sku_count,
            clients,
            pipeline: 1,
            seconds: 3.0,
            transactions_per_s: units_per_s / f64::from(case.units_per_transaction()),
            units_per_s,
        }
    }

    #[test]
    fn each_strategy_is_put_beside_the_anchor_it_chases() {
        let results = Results {
            cases: vec![
                case(Strategy::Coalesced, Transport::InProcess, "1", 8000.0),
                case(Strategy::Guarded, Transport::InProcess, "1", 900.0),
                // Over HTTP, and at a level no anchor ran: left out.
                case(Strategy::Guarded, Transport::Http, "1", 700.0),
                case(Strategy::Guarded, Transport::InProcess, "16", 2000.0),
            ],
            anchors: vec![
                anchor_result("postgres", AnchorCase::Batch { size: 32 }, 1, 64, 16_000.0),
                anchor_result("postgres", AnchorCase::Guarded, 1, 64, 1000.0),
                anchor_result("postgres", STRETCH_CEILING, 1, 1, 32_000.0),
                anchor_result("postgres", AnchorCase::Batch { size: 32 }, 1, 2, 10_000.0),
                anchor_result("mysql", AnchorCase::Guarded, 1, 64, 5.0),
            ],
            ..Results::default()
        };
        let rows = anchor_comparisons(&results);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ratio(), Some(0.5));
        assert_eq!(rows[0].stretch_ratio(), Some(0.25));
        assert_eq!(
            rows[0].equal_in_flight_ratio(),
            Some(0.8),
            "batch32 at 64 / 32 clients"
        );
        assert_eq!(rows[1].ratio(), Some(0.9));
        assert!(rows[1].stretch.is_none() && rows[1].equal_in_flight.is_none());

        let mut md = String::new();
        anchor_section(&mut md, &results).unwrap();
        assert!(
            md.contains(
                "| postgres | 1xuniform | 64 | coalesced | 8000 | pgbench batch32 | 16000 | 0.50× | 0.25× | 0.80× (÷ 10000 at 2 clients) |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| postgres | 1xuniform | 64 | guarded | 900 | pgbench guarded | 1000 | 0.90× | – | – |"
            ),
            "{md}"
        );

        assert_eq!(
            short_tool("pgbench (PostgreSQL) 15.20 (Debian 15.20-0+deb12u1)"),
            "pgbench 15.20"
        );
        assert_eq!(short_tool("sysbench 1.0.20"), "sysbench 1.0.20");

        let mut nothing = String::new();
        anchor_section(&mut nothing, &Results::default()).unwrap();
        assert!(nothing.is_empty());
    }
}
