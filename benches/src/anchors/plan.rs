//! Which anchors a run has, and running them: the server databases' cases (one fresh
//! database each) and the Redis cases, before the library's own cases, so both sides of
//! every ratio come from the same run. A missing tool skips the anchors, saying why, or fails
//! the run where a database is required (CI).

use stockguard_testkit::Backend;

use super::redis_lua::{LuaSpec, lua_specs, run_lua_anchor};
use super::{ANCHOR_WIDE_SKUS, AnchorCase, AnchorSpec, run_backend_anchors, tools_present};
use crate::report::Results;

/// Which anchor cases a profile runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnchorSet {
    /// Guarded and batch-32 on the hot SKU, one second each: proves the tools run (CI).
    Smoke,
    /// Every pattern on the hot SKU at the run's requesters, batch-64 and batch-128 from one
    /// client, and the wide cases the library's 100k-SKU level compares with.
    Quick,
    /// The scripts' whole matrix (1, 8, 32 and the run's requesters on the hot SKU; 8 and the
    /// requesters on 100k SKUs), longer.
    Full,
}

/// The anchor cases of a profile, for the run's server databases.
pub fn anchor_specs(set: AnchorSet, databases: &[Backend], requesters: usize) -> Vec<AnchorSpec> {
    let servers: Vec<Backend> = databases
        .iter()
        .copied()
        .filter(|b| b.server().is_some())
        .collect();
    let per_request = [
        AnchorCase::Pessimistic,
        AnchorCase::Optimistic,
        AnchorCase::Guarded,
    ];
    let batch32 = AnchorCase::Batch { size: 32 };
    let mut cases: Vec<(AnchorCase, usize, usize)> = Vec::new();
    let seconds = match set {
        AnchorSet::Smoke => {
            cases.extend([(AnchorCase::Guarded, 1, requesters), (batch32, 1, requesters)]);
            1
        }
        AnchorSet::Quick | AnchorSet::Full => {
            let mut hot_clients = vec![requesters];
            let mut wide_clients = vec![requesters];
            if set == AnchorSet::Full {
                hot_clients = vec![1, 8, 32, requesters];
                wide_clients = vec![8, requesters];
            }
            hot_clients.sort_unstable();
            hot_clients.dedup();
            wide_clients.sort_unstable();
            wide_clients.dedup();
            for clients in &hot_clients {
                cases.extend(per_request.map(|case| (case, 1, *clients)));
                cases.push((batch32, 1, *clients));
            }
            // batch32 with as many units in flight as the requesters (one unit each): what
            // the database alone reaches with the library's own concurrency.
            let equal_in_flight = requesters / 32;
            if requesters.is_multiple_of(32) && !hot_clients.contains(&equal_in_flight) {
                cases.push((batch32, 1, equal_in_flight));
            }
            // The single-client batches: the round trip alone, no lock wait at all.
            cases.extend([64, 128].map(|size| (AnchorCase::Batch { size }, 1, 1)));
            for clients in wide_clients {
                cases.extend(per_request.map(|case| (case, ANCHOR_WIDE_SKUS, clients)));
            }
            if set == AnchorSet::Full { 10 } else { 2 }
        }
    };
    servers
        .iter()
        .flat_map(|backend| {
            cases.iter().map(move |(case, sku_count, clients)| AnchorSpec {
                backend: *backend,
                case: *case,
                sku_count: *sku_count,
                clients: *clients,
                seconds,
            })
        })
        .collect()
}

/// The anchors of one run.
#[derive(Debug, Default)]
pub struct AnchorPlan {
    /// The server databases' cases.
    pub specs: Vec<AnchorSpec>,
    /// The Redis cases.
    pub lua: Vec<LuaSpec>,
    /// The Redis the Lua cases run on.
    pub redis_url: String,
}

/// Plans the anchors of `set`: the server databases' cases, and the Redis ones when Redis
/// answers. Returns the plan and, when a tool or Redis is missing and nothing requires it,
/// why part of it was skipped.
pub async fn plan_anchors(
    set: AnchorSet,
    databases: &[Backend],
    requesters: usize,
    flash_clients: usize,
    redis_url: &str,
    required: bool,
) -> anyhow::Result<(AnchorPlan, Option<String>)> {
    let mut skipped = Vec::new();
    let mut specs = anchor_specs(set, databases, requesters);
    let backends: Vec<Backend> = databases
        .iter()
        .copied()
        .filter(|b| b.server().is_some())
        .collect();
    let redis = match crate::flash_plan::redis_answers(redis_url).await {
        Ok(()) => true,
        Err(reason) => {
            anyhow::ensure!(!required, "the Redis anchor needs Redis: {reason}");
            skipped.push(format!("the Redis anchor: {reason}"));
            false
        }
    };
    if let Err(reason) = tools_present(&backends, redis).await {
        anyhow::ensure!(!required, "the anchors need their tools: {reason}");
        skipped.push(reason);
        specs.clear();
    }
    let lua = if redis && skipped.is_empty() {
        lua_specs(set, flash_clients)
    } else {
        Vec::new()
    };
    let skipped = (!skipped.is_empty()).then(|| skipped.join("; "));
    if let Some(reason) = &skipped {
        eprintln!("stockguard-bench: skipping anchors: {reason}");
    }
    Ok((
        AnchorPlan {
            specs,
            lua,
            redis_url: redis_url.to_owned(),
        },
        skipped,
    ))
}

/// Runs the plan, logging each case; a case that could not run is recorded in
/// `results.case_errors`, a failed check in `results.anchor_problems`.
pub async fn run_anchor_plan(plan: AnchorPlan, log: &dyn Fn(String), results: &mut Results) {
    for backend in Backend::ALL {
        let specs: Vec<AnchorSpec> = plan
            .specs
            .iter()
            .filter(|s| s.backend == backend)
            .cloned()
            .collect();
        if specs.is_empty() {
            continue;
        }
        match run_backend_anchors(backend, &specs, log).await {
            Ok((cases, problems)) => {
                results.anchors.extend(cases);
                results.anchor_problems.extend(problems);
            }
            Err(error) => {
                let message = format!("{backend} anchors: {error:#}");
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
    for spec in plan.lua {
        match run_lua_anchor(&plan.redis_url, spec).await {
            Ok((case, problem)) => {
                log(format!(
                    "{:<52} {:>9.0} calls/s",
                    format!("redis anchor {} x{}", case.case, case.clients),
                    case.transactions_per_s
                ));
                results.anchors.push(case);
                results.anchor_problems.extend(problem);
            }
            Err(error) => {
                let message = format!("redis anchor {}: {error:#}", spec.name());
                log(format!("CASE FAILED: {message}"));
                results.case_errors.push(message);
            }
        }
    }
}
