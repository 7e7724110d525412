//! The cases of one backend arranged for the tables and plots, and the cell formats they share.

use std::collections::BTreeMap;

use stockguard_core::Strategy;
use stockguard_testkit::Backend;

use crate::case::{CaseResult, Transport, Variant};
use crate::workload::{LevelSpec, Skew};

pub(super) fn level_key(level: &LevelSpec) -> String {
    level.to_string()
}

/// The keyed in-process cases of one backend, grouped by level (in first-seen order) then
/// variant. HTTP cases and unkeyed twins have their own tables (`http_table`, `keyed_table`).
pub(super) struct BackendView<'a> {
    pub(super) backend: Backend,
    pub(super) levels: Vec<(LevelSpec, usize)>,
    cases: BTreeMap<(String, usize), BTreeMap<Variant, &'a CaseResult>>,
}

impl<'a> BackendView<'a> {
    pub(super) fn new(backend: Backend, cases: &'a [CaseResult]) -> Self {
        let mut levels: Vec<(LevelSpec, usize)> = Vec::new();
        let mut grouped: BTreeMap<(String, usize), BTreeMap<Variant, &CaseResult>> = BTreeMap::new();
        for case in cases.iter().filter(|c| {
            c.spec.backend == backend && c.spec.transport == Transport::InProcess && c.spec.keying.keyed
        }) {
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

    pub(super) fn at(
        &self,
        level: &LevelSpec,
        requesters: usize,
    ) -> Option<&BTreeMap<Variant, &'a CaseResult>> {
        self.cases.get(&(level_key(level), requesters))
    }

    /// The level's conflict rate, the seed's own notion of "conflict": the fraction of
    /// `Optimistic` attempts whose version check missed. Lock-wait time was tried first, but on
    /// a loaded 2-core machine most requests wait ≥ 1 ms even at 100k SKUs, so it could not
    /// tell levels apart. Falls back to `Pessimistic`'s lock-wait rate when optimistic did not run.
    pub(super) fn level_conflict_rate(&self, level: &LevelSpec, requesters: usize) -> Option<f64> {
        let cases = self.at(level, requesters)?;
        match cases.get(&Variant::Library(Strategy::Optimistic)) {
            Some(optimistic) => Some(optimistic.failed_attempt_rate),
            None => cases
                .get(&Variant::Library(Strategy::Pessimistic))
                .map(|c| c.conflict_rate),
        }
    }

    /// Levels with their conflict rate, ascending.
    pub(super) fn levels_by_conflict(&self) -> Vec<(LevelSpec, usize, f64)> {
        let mut out: Vec<(LevelSpec, usize, f64)> = self
            .levels
            .iter()
            .filter_map(|(l, r)| self.level_conflict_rate(l, *r).map(|rate| (*l, *r, rate)))
            .collect();
        out.sort_by(|a, b| a.2.total_cmp(&b.2));
        out
    }

    /// The hot point: 1 SKU with the most requesters.
    pub(super) fn hot_point(&self) -> Option<(LevelSpec, usize)> {
        self.levels
            .iter()
            .filter(|(l, _)| l.sku_count == 1)
            .max_by_key(|(_, r)| *r)
            .copied()
    }

    /// The lowest-conflict point: the most SKUs under a uniform skew.
    pub(super) fn calm_point(&self) -> Option<(LevelSpec, usize)> {
        self.levels
            .iter()
            .filter(|(l, _)| l.sku_count > 1 && matches!(l.skew, Skew::Uniform))
            .max_by_key(|(l, r)| (l.sku_count, *r))
            .copied()
    }
}

pub(super) fn shed_fraction(case: &CaseResult) -> f64 {
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

pub(super) fn ratio(a: Option<&&CaseResult>, b: Option<&&CaseResult>) -> Option<f64> {
    let (a, b) = (a?, b?);
    (b.successes_per_s > 0.0).then(|| a.successes_per_s / b.successes_per_s)
}

pub(super) fn fmt_ratio(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}×"))
}

pub(super) fn fmt_rate(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    }
}

pub(super) fn fmt_ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

pub(super) fn fmt_errors(case: &CaseResult) -> String {
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

pub(super) fn verdict(case: &CaseResult) -> String {
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

/// A case with the given figures and defaults elsewhere, for the report's tests.
#[cfg(test)]
pub(super) fn sample_case(
    strategy: Strategy,
    transport: Transport,
    level: &str,
    successes_per_s: f64,
) -> CaseResult {
    use std::time::Duration;

    use crate::audit::AuditOutcome;
    use crate::case::{Bounds, CaseSpec, StockSizing};
    use crate::workload::{Keying, QuantityDist};

    CaseResult {
        spec: CaseSpec {
            backend: Backend::Postgres,
            variant: Variant::Library(strategy),
            transport,
            level: level.parse().expect("a valid level"),
            requesters: 64,
            pool_size: 64,
            warmup: Duration::from_millis(100),
            bounds: Bounds {
                duration: Duration::from_secs(1),
                ops_per_requester: None,
            },
            quantity: QuantityDist::Fixed { units: 1 },
            keying: Keying::KEYED,
            stock: StockSizing::Auto { fill: 0.9 },
            seed: 7,
        },
        database: "sg_bench_test".to_owned(),
        successes: 100,
        refused: 0,
        replayed: 1,
        errors: std::collections::BTreeMap::new(),
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
        http_get_ceiling_per_s: None,
        audit: AuditOutcome::default(),
    }
}
