//! Prometheus metrics in the text exposition format, kept in atomics and rendered on scrape.
//! `process` reads the standard `process_*` metrics from `/proc`.
//! Hand-rolled rather than a metrics crate: the set is small and fixed, and every label
//! value comes from a closed set (strategies, error kinds, route templates, status codes),
//! so cardinality stays bounded.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use stockguard_core::coalesce::BATCH_SIZE_BUCKETS;
use stockguard_core::{InventoryStore, OrderStrategy, Strategy};

use stockguard_redis_gate::Gate;

use crate::store::AnyStore;

mod gate;
pub mod named;
mod process;

/// Upper bounds, in seconds, of the latency and lock-wait histogram buckets (+Inf implied).
const SECONDS_BUCKETS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A fixed-bucket histogram of durations.
#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; SECONDS_BUCKETS.len()],
    count: AtomicU64,
    sum_us: AtomicU64,
}

impl Histogram {
    fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        for (bound, bucket) in SECONDS_BUCKETS.iter().zip(&self.buckets) {
            if seconds <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (bound, bucket) in SECONDS_BUCKETS.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum_seconds = Duration::from_micros(self.sum_us.load(Ordering::Relaxed)).as_secs_f64();
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_seconds}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

fn strategy_index(strategy: Strategy) -> usize {
    Strategy::ALL.iter().position(|s| *s == strategy).unwrap_or(0)
}

/// The latency histogram of one (method, route template, status).
#[derive(Debug)]
struct RequestSeries {
    method: String,
    route: String,
    status: u16,
    latency: std::sync::Arc<Histogram>,
}

/// Every metric the service exports, except the store-owned gauges read at scrape time.
#[derive(Debug, Default)]
pub struct Metrics {
    /// (strategy, outcome) → count. Outcome is `ok`, `replayed` or a `DeductError::kind()`.
    deductions: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (order strategy, outcome) → count, with the same outcomes.
    orders: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// (hold operation, outcome) → count, with the same outcomes.
    holds: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    retries: [AtomicU64; Strategy::ALL.len()],
    lock_wait: [Histogram; Strategy::ALL.len()],
    /// Latency histogram per (method, route template, status). A short list scanned in place:
    /// the set is small and closed, and a lookup by `&str` needs no allocation on the
    /// per-request path (a `BTreeMap<(String, String, u16), _>` key would allocate twice).
    requests: Mutex<Vec<RequestSeries>>,
    shed: AtomicU64,
    timed_out: AtomicU64,
}

impl Metrics {
    /// Records one deduction outcome.
    pub fn record_deduction(&self, strategy: Strategy, outcome: &'static str) {
        let mut map = self.deductions.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((strategy.as_str(), outcome)).or_default() += 1;
    }

    /// Records one order outcome.
    pub fn record_order(&self, strategy: OrderStrategy, outcome: &'static str) {
        let mut map = self.orders.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((strategy.as_str(), outcome)).or_default() += 1;
    }

    /// Records one hold operation's outcome (`reserve`, `confirm` or `release`).
    pub fn record_hold(&self, operation: &'static str, outcome: &'static str) {
        let mut map = self.holds.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((operation, outcome)).or_default() += 1;
    }

    /// Records a successful deduction's retries (`attempts − 1`) and lock wait.
    pub fn record_receipt(&self, strategy: Strategy, attempts: u32, lock_wait_us: u64) {
        let index = strategy_index(strategy);
        self.retries[index].fetch_add(u64::from(attempts.saturating_sub(1)), Ordering::Relaxed);
        self.lock_wait[index].observe(Duration::from_micros(lock_wait_us));
    }

    /// Records one HTTP request's latency.
    pub fn record_request(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let histogram = {
            let mut series = self.requests.lock().unwrap_or_else(|p| p.into_inner());
            let found = series
                .iter()
                .find(|s| s.status == status && s.route == route && s.method == method);
            match found {
                Some(known) => std::sync::Arc::clone(&known.latency),
                None => {
                    let latency = std::sync::Arc::new(Histogram::default());
                    series.push(RequestSeries {
                        method: method.to_owned(),
                        route: route.to_owned(),
                        status,
                        latency: std::sync::Arc::clone(&latency),
                    });
                    latency
                }
            }
        };
        histogram.observe(elapsed);
    }

    /// Counts a request refused because the concurrency limit was reached.
    pub fn record_shed(&self) {
        self.shed.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request that passed the request timeout.
    pub fn record_timeout(&self) {
        self.timed_out.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric, reading the store's pool and coalescer gauges (and the Redis
    /// gate's counters, when there is one) now.
    pub fn render(&self, store: &AnyStore, gate: Option<&Gate>) -> String {
        let mut out = String::with_capacity(8 * 1024);

        out.push_str("# HELP stockguard_deductions_total Deductions by strategy and outcome (ok, replayed or an error kind).\n");
        out.push_str("# TYPE stockguard_deductions_total counter\n");
        for ((strategy, outcome), count) in self.deductions.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "stockguard_deductions_total{{strategy=\"{strategy}\",outcome=\"{outcome}\"}} {count}"
            );
        }

        out.push_str("# HELP stockguard_orders_total Multi-line orders by strategy and outcome (ok, replayed or an error kind).\n");
        out.push_str("# TYPE stockguard_orders_total counter\n");
        for ((strategy, outcome), count) in self.orders.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "stockguard_orders_total{{strategy=\"{strategy}\",outcome=\"{outcome}\"}} {count}"
            );
        }

        out.push_str("# HELP stockguard_holds_total Hold operations (reserve, confirm, release) by outcome (ok, replayed or an error kind).\n");
        out.push_str("# TYPE stockguard_holds_total counter\n");
        for ((operation, outcome), count) in self.holds.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let _ = writeln!(
                out,
                "stockguard_holds_total{{operation=\"{operation}\",outcome=\"{outcome}\"}} {count}"
            );
        }

        out.push_str("# HELP stockguard_deduct_retries_total Retried attempts (attempts - 1) of successful deductions.\n");
        out.push_str("# TYPE stockguard_deduct_retries_total counter\n");
        for (strategy, retries) in Strategy::ALL.iter().zip(&self.retries) {
            let _ = writeln!(
                out,
                "stockguard_deduct_retries_total{{strategy=\"{strategy}\"}} {}",
                retries.load(Ordering::Relaxed)
            );
        }

        out.push_str("# HELP stockguard_lock_wait_seconds Time successful deductions waited for the right to change the row (incl. coalescer queue time).\n");
        out.push_str("# TYPE stockguard_lock_wait_seconds histogram\n");
        for (strategy, histogram) in Strategy::ALL.iter().zip(&self.lock_wait) {
            histogram.render(
                &mut out,
                "stockguard_lock_wait_seconds",
                &format!("strategy=\"{strategy}\""),
            );
        }

        out.push_str("# HELP stockguard_http_request_duration_seconds HTTP request latency by method, route template and status.\n");
        out.push_str("# TYPE stockguard_http_request_duration_seconds histogram\n");
        let mut series: Vec<(String, String, u16, std::sync::Arc<Histogram>)> = self
            .requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|s| {
                (
                    s.method.clone(),
                    s.route.clone(),
                    s.status,
                    std::sync::Arc::clone(&s.latency),
                )
            })
            .collect();
        // Sorted, so the exposition order is stable whatever order the series appeared in.
        series.sort_by(|a, b| (&a.0, &a.1, a.2).cmp(&(&b.0, &b.1, b.2)));
        for (method, route, status, histogram) in &series {
            histogram.render(
                &mut out,
                "stockguard_http_request_duration_seconds",
                &format!("method=\"{method}\",route=\"{route}\",status=\"{status}\""),
            );
        }

        out.push_str("# HELP stockguard_http_shed_total Requests refused with 503 because the concurrency limit was reached.\n");
        out.push_str("# TYPE stockguard_http_shed_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_http_shed_total {}",
            self.shed.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stockguard_http_timeouts_total Requests answered with 503 because they passed the request timeout.\n");
        out.push_str("# TYPE stockguard_http_timeouts_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_http_timeouts_total {}",
            self.timed_out.load(Ordering::Relaxed)
        );

        let (stats, queue_depth) = store.coalescer_stats();
        out.push_str("# HELP stockguard_coalescer_batch_size Requests per group-commit batch.\n");
        out.push_str("# TYPE stockguard_coalescer_batch_size histogram\n");
        for (bound, bucket) in BATCH_SIZE_BUCKETS.iter().zip(&stats.batch_size_buckets) {
            let _ = writeln!(
                out,
                "stockguard_coalescer_batch_size_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let batches = stats.batches.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "stockguard_coalescer_batch_size_bucket{{le=\"+Inf\"}} {batches}"
        );
        let _ = writeln!(
            out,
            "stockguard_coalescer_batch_size_sum {}",
            stats.batched_requests.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "stockguard_coalescer_batch_size_count {batches}");
        out.push_str(
            "# HELP stockguard_coalescer_queue_depth Deductions queued for group commit right now.\n",
        );
        out.push_str("# TYPE stockguard_coalescer_queue_depth gauge\n");
        let _ = writeln!(out, "stockguard_coalescer_queue_depth {queue_depth}");
        out.push_str("# HELP stockguard_coalescer_rejected_total Deductions refused because their SKU's queue was full.\n");
        out.push_str("# TYPE stockguard_coalescer_rejected_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_coalescer_rejected_total {}",
            stats.rejected_queue_full.load(Ordering::Relaxed)
        );
        out.push_str("# HELP stockguard_coalescer_cancelled_total Queued deductions skipped because their caller had gone.\n");
        out.push_str("# TYPE stockguard_coalescer_cancelled_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_coalescer_cancelled_total {}",
            stats.cancelled_before_batch.load(Ordering::Relaxed)
        );

        let engine = store.engine_stats();
        out.push_str("# HELP stockguard_retries_total Attempts retried by the engine, by cause.\n");
        out.push_str("# TYPE stockguard_retries_total counter\n");
        for (cause, count) in engine.retries() {
            let _ = writeln!(
                out,
                "stockguard_retries_total{{cause=\"{}\"}} {count}",
                cause.as_str()
            );
        }
        out.push_str(
            "# HELP stockguard_resolutions_total Lost answers resolved by idempotency key, by result.\n",
        );
        out.push_str("# TYPE stockguard_resolutions_total counter\n");
        for (resolution, count) in engine.resolutions() {
            let _ = writeln!(
                out,
                "stockguard_resolutions_total{{result=\"{}\"}} {count}",
                resolution.as_str()
            );
        }
        out.push_str("# HELP stockguard_holds_expired_total Holds expired, by who wrote the expiry: the sweeper, or a change that needed the units of a due hold.\n");
        out.push_str("# TYPE stockguard_holds_expired_total counter\n");
        for (by, count) in engine.holds_expired() {
            let _ = writeln!(
                out,
                "stockguard_holds_expired_total{{by=\"{}\"}} {count}",
                by.as_str()
            );
        }
        out.push_str("# HELP stockguard_outcome_unknown_total Changes answered outcome_unknown.\n");
        out.push_str("# TYPE stockguard_outcome_unknown_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_outcome_unknown_total {}",
            engine.outcome_unknown()
        );
        out.push_str("# HELP stockguard_deadline_exceeded_total Calls cut short by the engine's deadline.\n");
        out.push_str("# TYPE stockguard_deadline_exceeded_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_deadline_exceeded_total {}",
            engine.deadline_exceeded()
        );
        out.push_str("# HELP stockguard_replays_from_memory_total Client retries of deductions answered from the engine's memory of recently committed keys, without the database.\n");
        out.push_str("# TYPE stockguard_replays_from_memory_total counter\n");
        let _ = writeln!(
            out,
            "stockguard_replays_from_memory_total {}",
            engine.replays_from_memory()
        );

        let pool = store.pool_status();
        out.push_str("# HELP stockguard_pool_connections Pooled database connections by state.\n");
        out.push_str("# TYPE stockguard_pool_connections gauge\n");
        let in_use = pool.size.saturating_sub(pool.idle);
        let _ = writeln!(out, "stockguard_pool_connections{{state=\"in_use\"}} {in_use}");
        let _ = writeln!(out, "stockguard_pool_connections{{state=\"idle\"}} {}", pool.idle);
        out.push_str("# HELP stockguard_pool_max_connections Configured pool size.\n");
        out.push_str("# TYPE stockguard_pool_max_connections gauge\n");
        let _ = writeln!(out, "stockguard_pool_max_connections {}", pool.max_size);
        out.push_str("# HELP stockguard_pool_acquire_wait_seconds Time calls waited for a pooled database connection (including waits that timed out or were abandoned).\n");
        out.push_str("# TYPE stockguard_pool_acquire_wait_seconds histogram\n");
        let wait = store.pool_wait();
        let buckets = wait.cumulative_seconds();
        for (bound, count) in &buckets {
            let le = bound.map_or_else(|| "+Inf".to_owned(), |bound| bound.to_string());
            let _ = writeln!(
                out,
                "stockguard_pool_acquire_wait_seconds_bucket{{le=\"{le}\"}} {count}"
            );
        }
        let waits = buckets.last().map_or(0, |(_, count)| *count);
        let _ = writeln!(
            out,
            "stockguard_pool_acquire_wait_seconds_sum {}",
            wait.sum_seconds()
        );
        let _ = writeln!(out, "stockguard_pool_acquire_wait_seconds_count {waits}");

        out.push_str(
            "# HELP stockguard_build_info The running build: always 1, with the version as a label.\n",
        );
        out.push_str("# TYPE stockguard_build_info gauge\n");
        let _ = writeln!(
            out,
            "stockguard_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        if let Some(gate) = gate {
            gate::render(&mut out, gate);
        }
        process::render(&mut out);
        out
    }
}
