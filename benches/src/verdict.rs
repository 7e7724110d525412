//! The run's verdict: everything that fails it, one line each. A library or baseline
//! violation, a case that could not run, a failed checkout, flash-sale, low-conflict or
//! Redis-lock case, an anchor whose database does not add up, and a negative control that
//! went uncaught where its race must happen.

use crate::checkout::CheckoutResult;
use crate::flash::FlashResult;
use crate::report::Results;
use crate::tally::is_fatal_error_kind;

/// Why the run fails; empty when it passed.
pub fn failures(results: &Results) -> Vec<String> {
    let seed = results.seed;
    let mut failures = Vec::new();
    for case in &results.cases {
        let spec = &case.spec;
        if spec.variant.is_negative_control() {
            if case.audit.passed() && spec.level.sku_count == 1 && spec.requesters >= 8 && case.successes > 0
            {
                failures.push(format!(
                    "HARNESS BROKEN: the negative control unsafe_no_lock passed the audit on {} at 1 hot SKU × {} \
                     requesters (seed {seed}); the audit should have caught its lost updates",
                    spec.backend, spec.requesters
                ));
            }
            continue;
        }
        if !case.audit.passed() {
            failures.push(format!(
                "AUDIT FAILED: strategy {} on {} at level {} × {} requesters, seed {seed}: {}",
                spec.path_name(),
                spec.backend,
                spec.level,
                spec.requesters,
                case.audit.messages.join("; ")
            ));
        }
        for (kind, count) in case
            .errors
            .iter()
            .filter(|(kind, count)| is_fatal_error_kind(kind) && **count > 0)
        {
            failures.push(format!(
                "UNEXPECTED ERRORS: strategy {} on {} at level {}, seed {seed}: {count} {kind} errors",
                spec.path_name(),
                spec.backend,
                spec.level
            ));
        }
    }
    for failure in results.checkout.iter().filter_map(CheckoutResult::failure) {
        failures.push(format!("CHECKOUT FAILED (seed {seed}): {failure}"));
    }
    for case in &results.gate_overhead {
        if !case.problems.is_empty() || !case.errors.is_empty() {
            failures.push(format!(
                "GATE OVERHEAD CASE FAILED (seed {seed}): {}: {:?} {:?}",
                case.spec.label(),
                case.problems,
                case.errors
            ));
        }
    }
    for failure in results.redis_lock.iter().filter_map(|case| case.failure()) {
        failures.push(format!("REDIS LOCK CASE FAILED (seed {seed}): {failure}"));
    }
    for failure in results.flash.iter().filter_map(FlashResult::failure) {
        failures.push(format!("FLASH SALE FAILED (seed {seed}): {failure}"));
    }
    for failure in results.flash_http.iter().filter_map(|case| case.failure()) {
        failures.push(format!(
            "FLASH REFUSALS OVER HTTP FAILED (seed {seed}): {failure}"
        ));
    }
    for failure in results.flash_faults.iter().filter_map(|case| case.failure()) {
        failures.push(format!(
            "FLASH SALE UNDER A FAULT FAILED (seed {seed}): {failure}"
        ));
    }
    for failure in results.galera.iter().filter_map(|case| case.failure()) {
        failures.push(format!("GALERA CASE FAILED (seed {seed}): {failure}"));
    }
    for failure in results.instances.iter().filter_map(|case| case.failure()) {
        failures.push(format!("INSTANCES CASE FAILED (seed {seed}): {failure}"));
    }
    for failure in results.pg_ha.iter().filter_map(|case| case.failure()) {
        failures.push(format!("PG HA CASE FAILED (seed {seed}): {failure}"));
    }
    for problem in &results.anchor_problems {
        failures.push(format!("ANCHOR CHECK FAILED: {problem}"));
    }
    for error in &results.case_errors {
        failures.push(format!("CASE FAILED: {error}"));
    }
    failures
}
