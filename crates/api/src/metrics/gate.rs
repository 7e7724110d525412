//! The Redis admission gate's metrics, when the service has a gate.

use std::fmt::Write as _;

use stockguard_redis_gate::{Gate, GateStats};

/// Appends the gate's counters and its `redis_up` gauge.
pub(crate) fn render(out: &mut String, gate: &Gate) {
    let stats = gate.stats();
    out.push_str("# HELP stockguard_gate_requests_total Lines the Redis admission gate decided: admitted (units taken, on to the database), refused (insufficient stock, the database untouched), passed (straight to the database: Redis down and failing open, an unknown SKU, a replay), refused_redis_down (503: Redis down and failing closed), ungated (a SKU outside --redis-gate-skus, straight to the database with no Redis call).\n");
    out.push_str("# TYPE stockguard_gate_requests_total counter\n");
    for (decision, counter) in [
        ("admitted", &stats.admitted),
        ("refused", &stats.refused),
        ("passed", &stats.passed),
        ("refused_redis_down", &stats.refused_redis_down),
        ("ungated", &stats.ungated),
    ] {
        let _ = writeln!(
            out,
            "stockguard_gate_requests_total{{decision=\"{decision}\"}} {}",
            GateStats::get(counter)
        );
    }
    out.push_str("# HELP stockguard_gate_records_total How in-flight records ended: settled (committed), given_back (nothing changed), kept_unknown (outcome unknown, left for its key), resolved_committed and resolved_stale (by the reconciler).\n");
    out.push_str("# TYPE stockguard_gate_records_total counter\n");
    for (end, counter) in [
        ("settled", &stats.settled),
        ("given_back", &stats.given_back),
        ("kept_unknown", &stats.kept_unknown),
        ("resolved_committed", &stats.resolved_committed),
        ("resolved_stale", &stats.resolved_stale),
    ] {
        let _ = writeln!(
            out,
            "stockguard_gate_records_total{{end=\"{end}\"}} {}",
            GateStats::get(counter)
        );
    }
    for (name, help, counter) in [
        (
            "stockguard_gate_redis_errors_total",
            "Redis calls of the gate that failed or timed out.",
            &stats.redis_errors,
        ),
        (
            "stockguard_gate_reconciles_total",
            "Counters recomputed from the database (warm-ups, refreshes and reconcile passes).",
            &stats.reconciled,
        ),
        (
            "stockguard_gate_drift_units_total",
            "Units by which reconciles moved warm counters: the drift fixed.",
            &stats.drift_units,
        ),
        (
            "stockguard_gate_done_trims_total",
            "Done hashes dropped at their bound (--redis-done-max), their SKUs marked partial for the replay window.",
            &stats.done_trims,
        ),
        (
            "stockguard_gate_replay_lookups_total",
            "Short admissions checked against the database because the done hash was partial (a counter warmed for a SKU with ledger rows, as after Redis lost its data): a key the database has goes on as a replay.",
            &stats.replay_lookups,
        ),
        (
            "stockguard_gate_refused_by_hint_total",
            "Refusals answered by the local sold-out hint without a Redis call (counted in refused too).",
            &stats.refused_by_hint,
        ),
        (
            "stockguard_gate_refused_held_total",
            "Admissions refused while a restock from zero was held until every sold-out hint had expired (counted in refused too).",
            &stats.refused_held,
        ),
        (
            "stockguard_gate_sold_out_hints_total",
            "Sold-out snapshots kept as local hints (--redis-sold-out-hint-ms).",
            &stats.hints_taken,
        ),
        (
            "stockguard_gate_bypassed_total",
            "Lines passed to the database without a record (counted in passed too): Redis down and failing open, a counter that could not be warmed, a key in flight for other units.",
            &stats.bypassed,
        ),
        (
            "stockguard_gate_bypass_recorded_total",
            "Keys of sales made without a record, written to the done hash once Redis answered, so their replays are answered after sell-out.",
            &stats.bypass_recorded,
        ),
        (
            "stockguard_gate_bypass_partial_marks_total",
            "SKUs marked partial because a sale made without a record had an unknown outcome, or too many keys waited.",
            &stats.bypass_partial_marks,
        ),
    ] {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
            GateStats::get(counter)
        );
    }
    out.push_str(
        "# HELP stockguard_gate_redis_up 1 when the gate's last Redis call succeeded, 0 when it failed.\n",
    );
    out.push_str("# TYPE stockguard_gate_redis_up gauge\n");
    let _ = writeln!(out, "stockguard_gate_redis_up {}", u8::from(stats.redis_up()));
}
