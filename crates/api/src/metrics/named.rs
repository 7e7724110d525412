//! The metrics docs/ops names (the Grafana dashboard's queries and the Prometheus alert rules'
//! expressions), and which of them a `/metrics` scrape lacks. A renamed or dropped metric
//! would leave a panel empty and an alert silent without any error; the api's tests and every
//! chaos cell check a live scrape against this list instead.
//!
//! Names are matched as samples: a query selects `stockguard_pool_acquire_wait_seconds_bucket`,
//! and a scrape exposes exactly that sample name (a histogram's bare name never appears in a
//! query, nor as a sample). So `_bucket`, `_sum` and `_count` are kept on both sides, and a
//! name is present only when the scrape has at least one sample of it, not merely its `# TYPE`.

use std::collections::BTreeSet;

/// The dashboard, as shipped.
pub const DASHBOARD_JSON: &str = include_str!("../../../../docs/ops/grafana-dashboard.json");

/// The alert rules, as shipped.
pub const ALERT_RULES_YAML: &str = include_str!("../../../../docs/ops/alerts.yml");

/// Prefixes of the metrics stockguard exposes. Anything else a query names is Prometheus's own
/// (`up`) or a function, and is not ours to expose.
const OWN_PREFIXES: [&str; 2] = ["stockguard_", "process_"];

/// Every metric the shipped dashboard and alert rules name.
pub fn named_in_ops_docs() -> Result<BTreeSet<String>, serde_json::Error> {
    let mut names = named_in_dashboard(DASHBOARD_JSON)?;
    names.extend(named_in_alert_rules(ALERT_RULES_YAML));
    Ok(names)
}

/// The metrics named by the `expr` of every query in a Grafana dashboard (panels, rows'
/// nested panels and template variables alike: any `expr` string anywhere).
pub fn named_in_dashboard(json: &str) -> Result<BTreeSet<String>, serde_json::Error> {
    let dashboard: serde_json::Value = serde_json::from_str(json)?;
    let mut names = BTreeSet::new();
    collect_exprs(&dashboard, &mut |expr| names.extend(names_in_expr(expr)));
    Ok(names)
}

fn collect_exprs(value: &serde_json::Value, found: &mut impl FnMut(&str)) {
    match value {
        serde_json::Value::Object(fields) => {
            for (key, field) in fields {
                match field {
                    serde_json::Value::String(expr) if key == "expr" => found(expr),
                    other => collect_exprs(other, found),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|item| collect_exprs(item, found)),
        _ => {}
    }
}

/// The metrics named by every `expr:` of a Prometheus rules file, inline or as a block
/// scalar (`expr: |`). Read line by line: the rules format is plain enough, and the
/// workspace has no YAML parser to add for this.
pub fn named_in_alert_rules(yaml: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut lines = yaml.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some(value) = trimmed.strip_prefix("expr:") else {
            continue;
        };
        let value = value.trim();
        if value.is_empty() || value.starts_with('|') || value.starts_with('>') {
            // A block scalar: every following line indented deeper than `expr:` (or blank).
            let indent = line.len() - line.trim_start().len();
            while let Some(next) =
                lines.next_if(|next| next.trim().is_empty() || next.len() - next.trim_start().len() > indent)
            {
                names.extend(names_in_expr(next));
            }
        } else {
            names.extend(names_in_expr(value.trim_matches(['"', '\''])));
        }
    }
    names
}

/// The identifiers in a PromQL expression that are stockguard's metric names. Quoted strings
/// (label values such as a route) and comments are skipped.
pub fn names_in_expr(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                let mut escaped = false;
                for (_, inner) in chars.by_ref() {
                    if inner == c && !escaped {
                        break;
                    }
                    escaped = inner == '\\' && !escaped;
                }
            }
            '#' => {
                for (_, inner) in chars.by_ref() {
                    if inner == '\n' {
                        break;
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' || c == '$' => {
                let mut end = start + c.len_utf8();
                while let Some((at, next)) =
                    chars.next_if(|(_, next)| next.is_ascii_alphanumeric() || *next == '_' || *next == ':')
                {
                    end = at + next.len_utf8();
                }
                let word = &expr[start..end];
                if OWN_PREFIXES.iter().any(|prefix| word.starts_with(prefix)) {
                    names.insert(word.to_owned());
                }
            }
            _ => {}
        }
    }
    names
}

/// The sample names in a Prometheus text exposition (comment lines left out).
pub fn exposed(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The names in `named` that `scrape` has no sample of, in order.
pub fn missing_from(named: &BTreeSet<String>, scrape: &str) -> Vec<String> {
    let exposed = exposed(scrape);
    named.difference(&exposed).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_exprs_without_label_values_or_prometheus_own() {
        let names = names_in_expr(
            r#"histogram_quantile(0.99, sum by (le) (rate(stockguard_http_request_duration_seconds_bucket{route="/stockguard_not_a_metric",job=~"$job"}[$__rate_interval])))
               / on() group_left up{job="stockguard"} # stockguard_in_a_comment
               + process_open_fds"#,
        );
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "process_open_fds",
                "stockguard_http_request_duration_seconds_bucket"
            ]
        );
    }

    #[test]
    fn rules_exprs_are_read_inline_and_as_block_scalars() {
        let yaml = r#"
groups:
  - name: g
    rules:
      - alert: A
        expr: increase(stockguard_a_total[5m]) > 0
        annotations:
          summary: "mentions stockguard_not_in_an_expr"
      - alert: B
        expr: |
          sum(rate(stockguard_b_total[5m]))

            / sum(rate(stockguard_c_total[5m]))
        for: 5m
      - expr: "stockguard_d"
"#;
        let names: Vec<String> = named_in_alert_rules(yaml).into_iter().collect();
        assert_eq!(
            names,
            [
                "stockguard_a_total",
                "stockguard_b_total",
                "stockguard_c_total",
                "stockguard_d"
            ]
        );
    }

    #[test]
    fn a_name_without_a_sample_is_missing() {
        let scrape = "# HELP stockguard_x_total X.\n# TYPE stockguard_x_total counter\n\
                      # TYPE stockguard_h_seconds histogram\nstockguard_h_seconds_bucket{le=\"+Inf\"} 1\n\
                      stockguard_h_seconds_count 1\nprocess_open_fds 9\n";
        let named: BTreeSet<String> = [
            "stockguard_x_total",
            "stockguard_h_seconds_bucket",
            "stockguard_h_seconds_count",
            "stockguard_h_seconds_sum",
            "stockguard_h_seconds",
            "process_open_fds",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(
            missing_from(&named, scrape),
            [
                "stockguard_h_seconds",
                "stockguard_h_seconds_sum",
                "stockguard_x_total"
            ]
        );
    }

    #[test]
    fn the_shipped_docs_name_the_metrics_they_are_about() {
        let names = named_in_ops_docs().expect("the dashboard is JSON");
        for expected in [
            "stockguard_pool_acquire_wait_seconds_bucket",
            "stockguard_outcome_unknown_total",
            "stockguard_resolutions_total",
            "stockguard_retries_total",
            "stockguard_coalescer_queue_depth",
            "stockguard_http_shed_total",
            "process_resident_memory_bytes",
        ] {
            assert!(
                names.contains(expected),
                "{expected} not named in docs/ops: {names:?}"
            );
        }
        assert!(!names.contains("up"));
    }
}
