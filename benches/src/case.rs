//! What one case is: the deduction path, how requests reach it, the workload and its bounds,
//! and what it measured. Plain data, shared by the runner, both transports and the report.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::LazyLock;
use std::time::Duration;

use clap::ValueEnum;
use clap::builder::PossibleValue;
use serde::Serialize;
use stockguard_core::Strategy;
use stockguard_testkit::Backend;

use crate::audit::AuditOutcome;
use crate::raw::RawOp;
use crate::tally::Outcome;
use crate::workload::{Keying, LevelSpec, QuantityDist, Request};

/// One deduction path under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Variant {
    /// A library strategy, through `InventoryStore::deduct`.
    Library(Strategy),
    /// Raw SQL on a bare sqlx pool: a baseline or the negative control.
    Raw(RawOp),
}

/// Every variant, built once so clap can list them (`ValueEnum` hands out a `'static` slice):
/// the library strategies in core's order, the two raw baselines, the negative control.
static ALL_VARIANTS: LazyLock<Vec<Variant>> = LazyLock::new(|| {
    Strategy::ALL
        .into_iter()
        .map(Variant::Library)
        .chain(RawOp::ALL.into_iter().map(Variant::Raw))
        .collect()
});

impl Variant {
    /// Every variant, in report order.
    pub fn all() -> &'static [Variant] {
        &ALL_VARIANTS
    }

    /// The name used in reports and flags.
    pub fn name(self) -> &'static str {
        match self {
            Variant::Library(strategy) => strategy.as_str(),
            Variant::Raw(op) => op.as_str(),
        }
    }

    /// True for the seed's unsafe flow, whose audit failure is expected.
    pub fn is_negative_control(self) -> bool {
        self == Variant::Raw(RawOp::UnsafeNoLock)
    }

    /// False for a library strategy the backend's adapter does not implement (SQLite has no
    /// `Sharded`: one writer at a time leaves nothing to spread). Such cases are not run.
    pub fn runs_on(self, backend: Backend) -> bool {
        !(backend == Backend::Sqlite && self == Variant::Library(Strategy::Sharded))
    }
}

impl ValueEnum for Variant {
    fn value_variants<'a>() -> &'a [Self] {
        Variant::all()
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            Variant::Library(_) => "library strategy",
            Variant::Raw(RawOp::UnsafeNoLock) => "negative control: read-check-write with no lock",
            Variant::Raw(_) => "raw-SQL baseline",
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

// Serialized as its report name (`guarded`, `raw_guarded`, …) so library strategies and raw
// baselines can never be confused in results.json.
impl Serialize for Variant {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How requests reach the library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Requesters call `InventoryStore::deduct` directly.
    #[value(name = "in-process", alias = "in_process")]
    InProcess,
    /// Requesters call the `stockguard` HTTP service (`POST /v1/skus/{sku}/deduct`), which
    /// runs in the same process on its own runtime over the same kind of store.
    Http,
}

impl Transport {
    /// Every transport, in report order.
    pub const ALL: [Transport; 2] = [Transport::InProcess, Transport::Http];

    /// The name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::InProcess => "in_process",
            Transport::Http => "http",
        }
    }

    /// Whether `variant` can run over this transport: HTTP reaches only the library (the raw
    /// baselines and the negative control bypass it, so they always run in-process).
    pub fn carries(self, variant: Variant) -> bool {
        match self {
            Transport::InProcess => true,
            Transport::Http => matches!(variant, Variant::Library(_)),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that performs one deduction: `request.units` from SKU index `request.sku_index`,
/// under the client's key when the request carries one.
pub trait Deductor: Send + Sync + 'static {
    /// Performs it and reports the outcome.
    fn deduct(&self, request: &Request) -> impl Future<Output = Outcome> + Send;
}

/// How long a drive lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Bounds {
    /// Requesters stop starting new requests after this long.
    pub duration: Duration,
    /// And after this many requests each, if set.
    pub ops_per_requester: Option<u64>,
}

/// How each SKU's initial stock is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum StockSizing {
    /// From the warm-up's measured rate: each SKU gets `fill ×` its expected demand over the
    /// measured run (at least 1 unit), so SKUs sell out near the end of the run and the
    /// sell-out must be exact.
    Auto {
        /// Fraction of the expected demand to stock (e.g. 0.9).
        fill: f64,
    },
    /// The same fixed stock for every SKU.
    Fixed {
        /// Units per SKU.
        units: i64,
    },
}

/// Everything one case needs.
#[derive(Debug, Clone, Serialize)]
pub struct CaseSpec {
    /// Database.
    pub backend: Backend,
    /// Deduction path.
    pub variant: Variant,
    /// How requests reach it.
    pub transport: Transport,
    /// Conflict level (SKU count and skew).
    pub level: LevelSpec,
    /// Concurrent requesters.
    pub requesters: usize,
    /// Connections in the pool (library and raw alike).
    pub pool_size: u32,
    /// Warm-up length; also measures the rate that sizes the stock.
    pub warmup: Duration,
    /// Measured run bounds.
    pub bounds: Bounds,
    /// Quantities.
    pub quantity: QuantityDist,
    /// Whether requests carry idempotency keys, and how many are retries.
    #[serde(flatten)]
    pub keying: Keying,
    /// Stock sizing.
    pub stock: StockSizing,
    /// The run's seed.
    pub seed: u64,
}

impl CaseSpec {
    /// The same case with clients that send no Idempotency-Key (the keyed / unkeyed table).
    pub fn unkeyed_twin(&self) -> CaseSpec {
        CaseSpec {
            keying: Keying::UNKEYED,
            ..self.clone()
        }
    }

    /// `strategy` in-process, `strategy over http` otherwise, `(unkeyed)` when the clients
    /// send no keys: the name in logs and messages.
    pub fn path_name(&self) -> String {
        let path = match self.transport {
            Transport::InProcess => self.variant.name().to_owned(),
            Transport::Http => format!("{} over http", self.variant),
        };
        if self.keying.keyed {
            path
        } else {
            format!("{path} (unkeyed)")
        }
    }
}

/// Measured figures and audit of one case.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    /// What ran.
    pub spec: CaseSpec,
    /// Name of the (dropped) database it ran in.
    pub database: String,
    /// Successful deductions.
    pub successes: u64,
    /// Refusals for insufficient stock.
    pub refused: u64,
    /// Retries answered with the stored receipt (they changed nothing and are not successes).
    pub replayed: u64,
    /// Errors by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// Successful deductions per second, over the selling window.
    pub successes_per_s: f64,
    /// Refusals per second, over the whole run.
    pub refused_per_s: f64,
    /// Time from start to the last success, in seconds (the selling window).
    pub selling_window_s: f64,
    /// Wall time of the measured run, in seconds.
    pub elapsed_s: f64,
    /// Mean attempts per successful deduction.
    pub attempts_per_success: f64,
    /// Measured conflict rate (see docs/benchmarks.md).
    pub conflict_rate: f64,
    /// Fraction of attempts that failed (version miss, deadlock) and were retried.
    pub failed_attempt_rate: f64,
    /// Successes that waited ≥ 1 ms for the row, as a fraction of successes.
    pub waited_fraction: f64,
    /// Success latency percentiles, in microseconds.
    pub latency_us_p50: u64,
    /// p95.
    pub latency_us_p95: u64,
    /// p99.
    pub latency_us_p99: u64,
    /// max.
    pub latency_us_max: u64,
    /// Units per second the warm-up reached (sizes the stock).
    pub warmup_units_per_s: f64,
    /// Σ initial stock over all SKUs.
    pub total_initial_stock: i64,
    /// Coalesced batches and their mean size, when the strategy is `Coalesced`.
    pub coalesced_batches: Option<u64>,
    /// Mean batch size.
    pub coalesced_mean_batch: Option<f64>,
    /// Over HTTP: `GET /healthz` answers per second from the same client, requesters and
    /// connections, measured right after the case for as long as it ran (the machine's
    /// trivial-request ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_get_ceiling_per_s: Option<f64>,
    /// The audit.
    pub audit: AuditOutcome,
}

impl CaseResult {
    /// Why a section's case fails the run, if it does: a failed audit, or an error that is
    /// not a refusal to shed load. `label` names the case in the message.
    pub fn failure(&self, label: &str) -> Option<String> {
        let fatal: u64 = self
            .errors
            .iter()
            .filter(|(kind, _)| crate::tally::is_fatal_error_kind(kind))
            .map(|(_, count)| *count)
            .sum();
        if !self.audit.passed() {
            Some(format!("{label}: audit: {}", self.audit.messages.join("; ")))
        } else if fatal > 0 {
            Some(format!("{label}: {fatal} unexpected errors: {:?}", self.errors))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transports_parse_and_http_carries_only_the_library() {
        for (raw, transport) in [
            ("in-process", Transport::InProcess),
            ("in_process", Transport::InProcess),
            ("http", Transport::Http),
        ] {
            assert_eq!(Transport::from_str(raw, false).unwrap(), transport);
        }
        assert!(Transport::from_str("https", false).is_err());
        assert_eq!(
            serde_json::to_string(&Transport::InProcess).unwrap(),
            "\"in_process\""
        );
        for variant in Variant::all() {
            assert!(Transport::InProcess.carries(*variant));
            assert_eq!(
                Transport::Http.carries(*variant),
                matches!(variant, Variant::Library(_)),
                "{variant}"
            );
        }
    }

    #[test]
    fn every_strategy_and_raw_path_is_a_variant_named_once() {
        for strategy in Strategy::ALL {
            assert_eq!(
                Variant::from_str(strategy.as_str(), false),
                Ok(Variant::Library(strategy))
            );
        }
        for op in RawOp::ALL {
            assert_eq!(Variant::from_str(op.as_str(), false), Ok(Variant::Raw(op)));
        }
        let mut names: Vec<&str> = Variant::all().iter().map(|v| v.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Variant::all().len());
        assert!(Variant::from_str("sharded", false).is_ok());
        assert!(Variant::from_str("fastest", false).is_err());
    }

    #[test]
    fn sqlite_runs_everything_but_sharded() {
        for variant in Variant::all() {
            assert_eq!(
                variant.runs_on(Backend::Sqlite),
                *variant != Variant::Library(Strategy::Sharded)
            );
            assert!(variant.runs_on(Backend::Postgres) && variant.runs_on(Backend::MySql));
        }
    }
}
