//! The keyed vs unkeyed table: what a client's Idempotency-Key costs each strategy.
//!
//! Every case runs keyed by default (a unique key per request, a share of retries). Where the
//! profile or `--unkeyed` asks, the same case runs again with clients that send no key, and
//! this table puts the two side by side. The library writes a key of its own making when the
//! client sends none, and so do the raw baselines, so "unkeyed" differs only in whose key the
//! ledger row carries (random client UUIDs against the library's time-ordered keys) and in
//! the retries.

use std::fmt::Write as _;

use stockguard_testkit::Backend;

use super::view::{fmt_ms, fmt_rate, fmt_ratio, level_key, verdict};
use crate::case::{CaseResult, Transport};
use crate::workload::KeyShape;

/// One row: an unkeyed case and its keyed twin (same backend, variant, level and requesters).
#[derive(Debug, Clone, Copy)]
pub struct KeyedComparison<'a> {
    /// The case with a client key on every request.
    pub keyed: Option<&'a CaseResult>,
    /// The same case without client keys.
    pub unkeyed: &'a CaseResult,
}

impl KeyedComparison<'_> {
    /// Keyed successes/s ÷ unkeyed successes/s.
    pub fn ratio(&self) -> Option<f64> {
        let keyed = self.keyed?;
        (self.unkeyed.successes_per_s > 0.0).then(|| keyed.successes_per_s / self.unkeyed.successes_per_s)
    }
}

/// The unkeyed in-process cases of `backend` in run order, each with its keyed twin.
pub fn keyed_comparisons(backend: Backend, cases: &[CaseResult]) -> Vec<KeyedComparison<'_>> {
    let in_process = |c: &&CaseResult| c.spec.backend == backend && c.spec.transport == Transport::InProcess;
    let twin_of = |unkeyed: &CaseResult| {
        cases.iter().filter(in_process).find(|c| {
            c.spec.keying.keyed
                && c.spec.variant == unkeyed.spec.variant
                && c.spec.requesters == unkeyed.spec.requesters
                && level_key(&c.spec.level) == level_key(&unkeyed.spec.level)
        })
    };
    cases
        .iter()
        .filter(in_process)
        .filter(|c| !c.spec.keying.keyed)
        .map(|unkeyed| KeyedComparison {
            keyed: twin_of(unkeyed),
            unkeyed,
        })
        .collect()
}

pub(super) fn keyed_table(md: &mut String, backend: Backend, cases: &[CaseResult]) -> anyhow::Result<()> {
    let rows = keyed_comparisons(backend, cases);
    if rows.is_empty() {
        return Ok(());
    }
    let keying = rows.iter().find_map(|row| row.keyed.map(|c| c.spec.keying));
    let retry_share = keying.map_or(0.0, |k| k.retry_share);
    let shape = match keying.map(|k| k.shape) {
        Some(KeyShape::Uuid7) => "a unique time-ordered Idempotency-Key (a UUID v7, `--client-keys uuid7`)",
        _ => "a unique random Idempotency-Key (a UUID v4; `--client-keys uuid7` sends time-ordered ones)",
    };
    writeln!(md, "### Keyed vs unkeyed\n")?;
    writeln!(
        md,
        "Every case above is keyed: each request carries {shape}, and \
         {:.1}% of requests retry the previous one under its key; a retry of a committed deduction must \
         be answered with the stored receipt (`replays`), and the audit checks that the ledger holds one \
         distinct key per success. The unkeyed twin sends no key, so the library (and the raw baseline) \
         writes a time-ordered key of its own making. Keyed / unkeyed is the cost of the client's keys.\n",
        retry_share * 100.0
    )?;
    writeln!(
        md,
        "| level | requesters | strategy | keyed ok/s | unkeyed ok/s | keyed / unkeyed | keyed p99 ms | unkeyed p99 ms | replays | keyed audit | unkeyed audit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    for row in &rows {
        let unkeyed = row.unkeyed;
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            unkeyed.spec.level,
            unkeyed.spec.requesters,
            unkeyed.spec.variant,
            row.keyed
                .map_or_else(|| "not run".to_owned(), |c| fmt_rate(c.successes_per_s)),
            fmt_rate(unkeyed.successes_per_s),
            fmt_ratio(row.ratio()),
            row.keyed
                .map_or_else(|| "–".to_owned(), |c| fmt_ms(c.latency_us_p99)),
            fmt_ms(unkeyed.latency_us_p99),
            row.keyed
                .map_or_else(|| "–".to_owned(), |c| c.replayed.to_string()),
            row.keyed.map_or_else(|| "–".to_owned(), verdict),
            verdict(unkeyed),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use stockguard_core::Strategy;

    use super::*;
    use crate::report::view::sample_case as case;
    use crate::workload::Keying;

    fn unkeyed(case: CaseResult) -> CaseResult {
        let mut case = case;
        case.spec.keying = Keying::UNKEYED;
        case.replayed = 0;
        case
    }

    #[test]
    fn each_unkeyed_case_is_compared_with_its_keyed_twin() {
        let cases = vec![
            case(Strategy::Guarded, Transport::InProcess, "1", 900.0),
            unkeyed(case(Strategy::Guarded, Transport::InProcess, "1", 1000.0)),
            // The HTTP case has no unkeyed twin and is not compared.
            case(Strategy::Guarded, Transport::Http, "1", 700.0),
            unkeyed(case(Strategy::Coalesced, Transport::InProcess, "1", 8000.0)),
        ];
        let rows = keyed_comparisons(Backend::Postgres, &cases);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].ratio(), Some(0.9));
        assert!(rows[1].keyed.is_none() && rows[1].ratio().is_none());
        assert!(keyed_comparisons(Backend::MySql, &cases).is_empty());

        let mut md = String::new();
        keyed_table(&mut md, Backend::Postgres, &cases).unwrap();
        assert!(md.contains("1.0% of requests retry"), "{md}");
        assert!(
            md.contains("| 1xuniform | 64 | guarded | 900 | 1000 | 0.90× | 3.00 | 3.00 | 1 | ok | ok |"),
            "{md}"
        );
        assert!(md.contains("| coalesced | not run | 8000 | n/a |"), "{md}");

        let mut none = String::new();
        keyed_table(&mut none, Backend::Postgres, &cases[..1]).unwrap();
        assert!(none.is_empty());
    }
}
