//! report.md's checkout section: orders, holds and full checkouts per database, and the
//! ratios the checkout issue sets targets for.

use std::fmt::Write as _;

use stockguard_core::OrderStrategy;
use stockguard_testkit::Backend;

use super::view::fmt_ms;
use crate::checkout::{CheckoutLevel, CheckoutOp, CheckoutResult};

/// Hold creation / order placement with the same lines at 100k SKUs: the floor.
pub const HOLD_ORDER_RATIO_TARGET: f64 = 0.8;

/// Coalesced / locked orders at the hot point: the floor per database (none is set
/// for embedded SQLite, whose one writer serialises every transaction anyway).
fn coalesced_target(backend: Backend) -> Option<f64> {
    match backend {
        Backend::Postgres => Some(10.0),
        Backend::MySql => Some(5.0),
        _ => None,
    }
}

/// Writes the section (nothing when no checkout case ran).
pub(super) fn checkout_section(md: &mut String, cases: &[CheckoutResult]) -> std::fmt::Result {
    if cases.is_empty() {
        return Ok(());
    }
    writeln!(md, "\n## Checkout: orders and holds\n")?;
    writeln!(
        md,
        "3-line requests, 1 unit per line, in-process; `hot`: every request touches one hot SKU \
         plus two of 100,000 cold ones; `spread`: three of 100,000. `checkout` is a hold then a \
         confirm (90 %) or an abandoned 1-second hold (10 %) that the sweep must expire. After \
         every case: the library's audit (stock, ledger, orders, holds, reserved) and the ledger \
         row count against the successes.\n"
    )?;
    let mut backends: Vec<Backend> = cases.iter().map(|c| c.spec.backend).collect();
    backends.dedup();
    for backend in backends {
        writeln!(md, "### {backend}\n")?;
        writeln!(
            md,
            "| level | operation | strategy | requesters | ok/s | p50 | p99 | refused | errors | abandoned / expired | check |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
        let mine: Vec<&CheckoutResult> = cases.iter().filter(|c| c.spec.backend == backend).collect();
        for case in &mine {
            let spec = &case.spec;
            let errors: u64 = case.errors.values().sum();
            writeln!(
                md,
                "| {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |",
                level_name(spec.level),
                op_name(spec.op),
                spec.strategy.as_str(),
                spec.requesters,
                case.per_s,
                fmt_ms(case.p50_us),
                fmt_ms(case.p99_us),
                case.refused,
                errors,
                if spec.op == CheckoutOp::Checkout {
                    format!("{} / {}", case.abandoned, case.expired)
                } else {
                    "—".to_owned()
                },
                if case.passed() {
                    "pass".to_owned()
                } else {
                    format!("**FAIL**: {}", case.problems.join("; "))
                }
            )?;
        }
        let rate = |level, op, strategy| {
            mine.iter()
                .find(|c| c.spec.level == level && c.spec.op == op && c.spec.strategy == strategy)
                .map(|c| c.per_s)
        };
        writeln!(md)?;
        for strategy in OrderStrategy::ALL {
            if let (Some(hold), Some(order)) = (
                rate(CheckoutLevel::Spread, CheckoutOp::Hold, strategy),
                rate(CheckoutLevel::Spread, CheckoutOp::Order, strategy),
            ) {
                let ratio = hold / order;
                writeln!(
                    md,
                    "- spread, {}: hold / order = **{ratio:.3}×** (target ≥ {HOLD_ORDER_RATIO_TARGET}×: {})",
                    strategy.as_str(),
                    if ratio >= HOLD_ORDER_RATIO_TARGET {
                        "met"
                    } else {
                        "**missed**"
                    }
                )?;
            }
        }
        for level in [CheckoutLevel::Spread, CheckoutLevel::Hot] {
            if let (Some(checkout), Some(order)) = (
                rate(level, CheckoutOp::Checkout, OrderStrategy::Guarded),
                rate(level, CheckoutOp::Order, OrderStrategy::Guarded),
            ) {
                writeln!(
                    md,
                    "- {}: full checkout (hold, then confirm) / order, guarded = {:.2}×",
                    level_name(level),
                    checkout / order
                )?;
            }
        }
        if let (Some(guarded), Some(locked)) = (
            rate(CheckoutLevel::Hot, CheckoutOp::Order, OrderStrategy::Guarded),
            rate(CheckoutLevel::Hot, CheckoutOp::Order, OrderStrategy::Locked),
        ) {
            writeln!(md, "- hot: order guarded / locked = {:.2}×", guarded / locked)?;
        }
        if let (Some(coalesced), Some(locked)) = (
            rate(CheckoutLevel::Hot, CheckoutOp::Order, OrderStrategy::Coalesced),
            rate(CheckoutLevel::Hot, CheckoutOp::Order, OrderStrategy::Locked),
        ) {
            let ratio = coalesced / locked;
            let verdict = match coalesced_target(backend) {
                Some(target) if ratio >= target => format!(" (target ≥ {target}×: met)"),
                Some(target) => format!(" (target ≥ {target}×: **missed**)"),
                None => String::new(),
            };
            writeln!(md, "- hot: order coalesced / locked = **{ratio:.2}×**{verdict}")?;
        }
        writeln!(md)?;
    }
    Ok(())
}

fn level_name(level: CheckoutLevel) -> &'static str {
    match level {
        CheckoutLevel::Hot => "hot",
        CheckoutLevel::Spread => "spread",
    }
}

fn op_name(op: CheckoutOp) -> &'static str {
    match op {
        CheckoutOp::Order => "order",
        CheckoutOp::Hold => "hold",
        CheckoutOp::Checkout => "checkout",
    }
}
