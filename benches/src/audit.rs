//! The audit after every run: what the database holds must agree with itself and with what
//! the requesters were told.

use std::collections::HashMap;

use serde::Serialize;

use crate::tally::Tally;

/// Most violation messages kept per run (the counts are always complete).
pub const VIOLATION_MESSAGES_MAX: usize = 10;

/// One SKU as the database holds it after a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbSkuRow {
    /// SKU id.
    pub sku: String,
    /// Stock now.
    pub stock: i64,
    /// Stock at creation (the measured run's start).
    pub initial_stock: i64,
    /// Σ ledger deltas.
    pub ledger_delta_sum: i64,
    /// Ledger rows.
    pub ledger_rows: i64,
    /// Distinct idempotency keys on its ledger rows.
    pub ledger_keys: i64,
}

/// The audit's findings for one run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditOutcome {
    /// SKUs checked.
    pub skus_checked: u64,
    /// Ledger rows in the database.
    pub ledger_rows: i64,
    /// SKUs whose stock is below zero.
    pub negative_stock_skus: u64,
    /// SKUs where `initial − final ≠ Σ successful quantities` (the harness tally).
    pub stock_mismatch_skus: u64,
    /// SKUs where `−Σ ledger deltas ≠ Σ successful quantities`.
    pub ledger_sum_mismatch_skus: u64,
    /// SKUs where ledger rows ≠ successful deductions.
    pub ledger_row_mismatch_skus: u64,
    /// SKUs where the distinct keys on the ledger rows ≠ successful deductions: a key written
    /// twice, or a row without one (every deduction carries a key, the client's or one the
    /// library made, and a retry must never add a row).
    pub ledger_key_mismatch_skus: u64,
    /// SKUs where a request was refused for insufficient stock although the final stock
    /// would have covered it (stock only falls, so that refusal was wrong).
    pub inexact_sell_out_skus: u64,
    /// SKUs whose initial stock differs from what the harness set.
    pub initial_stock_mismatch_skus: u64,
    /// SKUs that sold out (a refusal was seen, or the stock reached 0).
    pub sold_out_skus: u64,
    /// Units confirmed to callers beyond what the SKU had: Σ max(0, sold − initial).
    pub oversold_units: i64,
    /// Units confirmed to callers that the stock never lost: Σ (sold − (initial − final)).
    pub lost_update_units: i64,
    /// Descriptions of the first violations.
    pub messages: Vec<String>,
}

impl AuditOutcome {
    /// True when every invariant holds.
    pub fn passed(&self) -> bool {
        self.negative_stock_skus == 0
            && self.stock_mismatch_skus == 0
            && self.ledger_sum_mismatch_skus == 0
            && self.ledger_row_mismatch_skus == 0
            && self.ledger_key_mismatch_skus == 0
            && self.inexact_sell_out_skus == 0
            && self.initial_stock_mismatch_skus == 0
            && self.oversold_units == 0
    }

    /// A one-word verdict for the report.
    pub fn verdict(&self) -> &'static str {
        if self.oversold_units > 0 {
            "OVERSOLD"
        } else if self.passed() {
            "ok"
        } else {
            "BROKEN"
        }
    }

    fn note(&mut self, message: String) {
        if self.messages.len() < VIOLATION_MESSAGES_MAX {
            self.messages.push(message);
        }
    }
}

/// Reconciles the database rows with the harness tally. `sku_names[i]` is SKU index `i`;
/// `initial_stocks[i]` is the stock the harness set for it before the measured run.
pub fn audit(
    db_rows: &[DbSkuRow],
    sku_names: &[String],
    initial_stocks: &[i64],
    tally: &Tally,
) -> AuditOutcome {
    let mut outcome = AuditOutcome {
        skus_checked: db_rows.len() as u64,
        ..AuditOutcome::default()
    };
    let index_of: HashMap<&str, usize> = sku_names
        .iter()
        .enumerate()
        .map(|(i, s)| (s.as_str(), i))
        .collect();
    if db_rows.len() != sku_names.len() {
        outcome.initial_stock_mismatch_skus += 1;
        outcome.note(format!(
            "the database holds {} SKUs, the harness created {}",
            db_rows.len(),
            sku_names.len()
        ));
    }
    let mut total_successes = 0u64;
    for row in db_rows {
        outcome.ledger_rows += row.ledger_rows;
        let Some(&index) = index_of.get(row.sku.as_str()) else {
            outcome.initial_stock_mismatch_skus += 1;
            outcome.note(format!("unexpected SKU {} in the database", row.sku));
            continue;
        };
        let expected_initial = initial_stocks[index];
        let sku_tally = tally.per_sku.get(&index).copied().unwrap_or_default();
        total_successes += sku_tally.successes;
        let sold = sku_tally.units_deducted;
        let sku = &row.sku;
        if row.initial_stock != expected_initial {
            outcome.initial_stock_mismatch_skus += 1;
            outcome.note(format!(
                "{sku}: initial_stock {} but the harness set {expected_initial}",
                row.initial_stock
            ));
        }
        if row.stock < 0 {
            outcome.negative_stock_skus += 1;
            outcome.note(format!("{sku}: stock is {} (below zero)", row.stock));
        }
        let drop = row.initial_stock - row.stock;
        if drop != sold {
            outcome.stock_mismatch_skus += 1;
            outcome.lost_update_units += sold - drop;
            outcome.note(format!(
                "{sku}: stock fell by {drop} (initial {} → final {}) but callers were told {sold} units were deducted",
                row.initial_stock, row.stock
            ));
        }
        if -row.ledger_delta_sum != sold {
            outcome.ledger_sum_mismatch_skus += 1;
            outcome.note(format!(
                "{sku}: ledger deltas sum to {} but callers were told {sold} units were deducted",
                row.ledger_delta_sum
            ));
        }
        if u64::try_from(row.ledger_rows).ok() != Some(sku_tally.successes) {
            outcome.ledger_row_mismatch_skus += 1;
            outcome.note(format!(
                "{sku}: {} ledger rows but {} successful deductions",
                row.ledger_rows, sku_tally.successes
            ));
        }
        if u64::try_from(row.ledger_keys).ok() != Some(sku_tally.successes) {
            outcome.ledger_key_mismatch_skus += 1;
            outcome.note(format!(
                "{sku}: {} distinct keys on the ledger but {} successful deductions",
                row.ledger_keys, sku_tally.successes
            ));
        }
        if sold > row.initial_stock {
            outcome.oversold_units += sold - row.initial_stock;
            outcome.note(format!(
                "{sku}: OVERSOLD: callers were told {sold} units were deducted from an initial stock of {}",
                row.initial_stock
            ));
        }
        if let Some(smallest_refused) = sku_tally.smallest_refused
            && i64::from(smallest_refused) <= row.stock
        {
            outcome.inexact_sell_out_skus += 1;
            outcome.note(format!(
                "{sku}: a request for {smallest_refused} was refused for insufficient stock, but {} units remain",
                row.stock
            ));
        }
        if sku_tally.smallest_refused.is_some() || row.stock == 0 {
            outcome.sold_out_skus += 1;
        }
    }
    if u64::try_from(outcome.ledger_rows).ok() != Some(total_successes) {
        outcome.note(format!(
            "{} ledger rows in total but {total_successes} successful deductions",
            outcome.ledger_rows
        ));
    }
    outcome
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::tally::Outcome;

    fn row(sku: &str, initial: i64, stock: i64, delta_sum: i64, rows: i64) -> DbSkuRow {
        DbSkuRow {
            sku: sku.to_owned(),
            stock,
            initial_stock: initial,
            ledger_delta_sum: delta_sum,
            ledger_rows: rows,
            ledger_keys: rows,
        }
    }

    fn tally(events: &[(usize, u32, bool)]) -> Tally {
        let mut tally = Tally::default();
        for &(sku, units, ok) in events {
            let outcome = if ok {
                Outcome::Success {
                    attempts: 1,
                    lock_wait_us: 0,
                }
            } else {
                Outcome::Refused
            };
            tally.record(
                sku,
                units,
                outcome,
                Duration::from_micros(100),
                Duration::from_millis(1),
            );
        }
        tally
    }

    #[test]
    fn a_reconciled_exact_sell_out_passes() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        // a: 5 units, sold 2+3, then a request for 1 refused at 0. b: untouched.
        let t = tally(&[(0, 2, true), (0, 3, true), (0, 1, false)]);
        let rows = [row("a", 5, 0, -5, 2), row("b", 4, 4, 0, 0)];
        let outcome = audit(&rows, &names, &[5, 4], &t);
        assert!(outcome.passed(), "{outcome:?}");
        assert_eq!(outcome.sold_out_skus, 1);
        assert_eq!(outcome.verdict(), "ok");
    }

    #[test]
    fn a_retry_that_applied_twice_or_a_row_without_its_key_is_caught() {
        let names = vec!["a".to_owned(), "b".to_owned()];
        let t = tally(&[(0, 1, true), (0, 1, true), (1, 1, true)]);
        let rows = [
            // a: stock, deltas and row count agree, but one key is on two rows
            DbSkuRow {
                ledger_keys: 1,
                ..row("a", 5, 3, -2, 2)
            },
            // b: a row that carries no key
            DbSkuRow {
                ledger_keys: 0,
                ..row("b", 5, 4, -1, 1)
            },
        ];
        let outcome = audit(&rows, &names, &[5, 5], &t);
        assert_eq!(outcome.ledger_key_mismatch_skus, 2);
        assert_eq!(outcome.stock_mismatch_skus, 0);
        assert!(!outcome.passed());
    }

    #[test]
    fn a_lost_update_is_reported_as_oversold() {
        let names = vec!["a".to_owned()];
        // Two racing requests both read 1, both "succeeded", and the second write was lost:
        // the stock fell by 1 while callers were told 2 units went out.
        let t = tally(&[(0, 1, true), (0, 1, true)]);
        let rows = [row("a", 1, 0, -2, 2)];
        let outcome = audit(&rows, &names, &[1], &t);
        assert!(!outcome.passed());
        assert_eq!(outcome.oversold_units, 1);
        assert_eq!(outcome.lost_update_units, 1);
        assert_eq!(outcome.verdict(), "OVERSOLD");
    }

    #[test]
    fn a_wrong_refusal_a_missing_ledger_row_and_negative_stock_are_caught() {
        let names = vec!["a".to_owned(), "b".to_owned(), "c".to_owned()];
        let t = tally(&[(0, 2, false), (1, 1, true)]);
        let rows = [
            // refused a request for 2 while 3 remain
            row("a", 3, 3, 0, 0),
            // a success with no ledger row
            row("b", 3, 2, 0, 0),
            // stock below zero
            row("c", 0, -1, 0, 0),
        ];
        let outcome = audit(&rows, &names, &[3, 3, 0], &t);
        assert_eq!(outcome.inexact_sell_out_skus, 1);
        assert_eq!(outcome.ledger_sum_mismatch_skus, 1);
        assert_eq!(outcome.ledger_row_mismatch_skus, 1);
        assert_eq!(outcome.negative_stock_skus, 1);
        assert_eq!(outcome.verdict(), "BROKEN");
    }
}
