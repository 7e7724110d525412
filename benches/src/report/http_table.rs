//! The HTTP vs in-process table: each HTTP case beside its in-process twin.

use std::fmt::Write as _;

use stockguard_testkit::Backend;

use super::view::{fmt_errors, fmt_ms, fmt_rate, fmt_ratio, level_key, verdict};
use crate::case::{CaseResult, Transport};

/// The HTTP / in-process throughput ratio the service should reach for the same strategy:
/// the service's own cost (HTTP parsing, auth, JSON, metrics) may take at most a fifth of
/// what the library alone achieves.
pub const HTTP_RATIO_TARGET: f64 = 0.8;

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
                && c.spec.keying.keyed == http.spec.keying.keyed
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

pub(super) fn http_table(md: &mut String, backend: Backend, cases: &[CaseResult]) -> anyhow::Result<()> {
    let rows = http_comparisons(backend, cases);
    writeln!(
        md,
        "### HTTP vs in-process
"
    )?;
    writeln!(
        md,
        "The same strategy driven through the `stockguard` service (a lean hyper HTTP/1.1 client, one \
         keep-alive connection per requester, bearer-token auth, JSON) and through the library directly, \
         in the same run. The service runs in this process on its own runtime; requesters, service and \
         database share the machine's cores. After each HTTP case the same client sends `GET /healthz` \
         for as long: the trivial-request ceiling, which the last ratio is taken against. Target: http / \
         in-process ≥ {HTTP_RATIO_TARGET}.\n"
    )?;
    writeln!(
        md,
        "| level | requesters | strategy | in-process ok/s | http ok/s | http / in-process | GET /healthz ceiling /s | http ok/s ÷ ceiling | in-process p99 ms | http p99 ms | ≥ {HTTP_RATIO_TARGET} | http errors | http audit |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|---|")?;
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
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {mark} | {} | {} |",
            http.spec.level,
            http.spec.requesters,
            http.spec.variant,
            row.in_process
                .map_or_else(|| "not run".to_owned(), |c| fmt_rate(c.successes_per_s)),
            fmt_rate(http.successes_per_s),
            fmt_ratio(ratio),
            http.http_get_ceiling_per_s
                .map_or_else(|| "–".to_owned(), fmt_rate),
            fmt_ratio(
                http.http_get_ceiling_per_s
                    .filter(|ceiling| *ceiling > 0.0)
                    .map(|ceiling| http.successes_per_s / ceiling)
            ),
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

#[cfg(test)]
mod tests {
    use stockguard_core::Strategy;

    use super::*;
    use crate::report::view::sample_case as case;

    #[test]
    fn each_http_case_is_compared_with_its_in_process_twin() {
        let cases = vec![
            case(Strategy::Guarded, Transport::InProcess, "1", 1000.0),
            case(Strategy::Guarded, Transport::Http, "1", 850.0),
            case(Strategy::Coalesced, Transport::InProcess, "1", 8000.0),
            CaseResult {
                http_get_ceiling_per_s: Some(10_000.0),
                ..case(Strategy::Coalesced, Transport::Http, "1", 4000.0)
            },
            case(Strategy::Guarded, Transport::InProcess, "100000", 2000.0),
            // No in-process twin at this level.
            case(Strategy::Pessimistic, Transport::Http, "100000", 900.0),
        ];
        let rows = http_comparisons(Backend::Postgres, &cases);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].ratio(), Some(0.85));
        assert_eq!(rows[1].ratio(), Some(0.5));
        assert!(rows[2].in_process.is_none() && rows[2].ratio().is_none());
        assert!(http_comparisons(Backend::MySql, &cases).is_empty());

        let mut md = String::new();
        http_table(&mut md, Backend::Postgres, &cases).unwrap();
        assert!(md.contains("| 1xuniform | 64 | guarded | 1000 | 850 |"), "{md}");
        assert!(md.contains("| 0.85× | – | n/a | 3.00 | 3.00 | ✔ |"), "{md}");
        assert!(md.contains("| 0.50× | 10000 | 0.40× | 3.00 | 3.00 | ✘ |"), "{md}");
        assert!(md.contains("| not run | 900 | n/a |"), "{md}");
        assert!(md.contains("1 of 2 compared cases reach the target"), "{md}");
    }
}
