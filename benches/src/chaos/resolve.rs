//! After the load: wait for quiescence, resolve every ambiguous operation by retrying it
//! with its key, and probe a sample of acknowledged keys for replays.
//!
//! Quiescence comes first because a retry proves something only once the original can no
//! longer commit: the service's request timeout has passed (the engine's deadline is 90 % of
//! it) and no session in the database runs a statement or holds a transaction.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde::Serialize;
use tokio::task::JoinSet;

use super::client::Api;
use super::history::{OpSpec, Role, Verdict, by_key};
use super::server::ServerUnderTest;

/// The resolver's client number in the history.
pub const RESOLVER_CLIENT: u32 = 2_000;
/// The prober's client number in the history.
pub const PROBER_CLIENT: u32 = 3_000;
/// Retries per ambiguous operation.
pub const RESOLVE_TRIES: u32 = 6;

/// Resolutions in flight at once.
const RESOLVERS_IN_FLIGHT: usize = 4;
/// Acknowledged keys replayed after quiescence.
pub const PROBES_MAX: usize = 40;
/// Bound on waiting for busy sessions to end.
const QUIESCENCE_LIMIT: Duration = Duration::from_secs(30);

/// How quiescence was reached.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Quiescence {
    /// Time waited in all.
    pub waited_ms: u64,
    /// Busy sessions at the last look (0 when quiet).
    pub busy_sessions: i64,
}

/// Waits past `request_timeout`, then until no session of the service's database is busy.
pub async fn quiesce(
    server: Option<&ServerUnderTest>,
    request_timeout: Duration,
) -> anyhow::Result<Quiescence> {
    let started = Instant::now();
    tokio::time::sleep(request_timeout + Duration::from_millis(500)).await;
    let mut busy = 0;
    if let Some(server) = server {
        loop {
            busy = server.busy_sessions().await?;
            if busy == 0 || started.elapsed() > QUIESCENCE_LIMIT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(Quiescence {
        waited_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        busy_sessions: busy,
    })
}

/// What the resolution did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ResolveSummary {
    /// Operations that needed resolving.
    pub open: u64,
    /// Retries sent.
    pub retries: u64,
    /// Operations still open after every retry.
    pub still_open: u64,
    /// Replay probes sent.
    pub probes: u64,
}

/// Retries every open operation with its key until a conclusive answer (2xx, or a 4xx),
/// at most [`RESOLVE_TRIES`] times each, four at a time.
pub async fn resolve(api: &Arc<Api>, timeout: Duration) -> ResolveSummary {
    let records = api.recorder().snapshot();
    let open: Vec<OpSpec> = by_key(&records)
        .into_values()
        .filter(|ops| {
            let committed = ops
                .iter()
                .any(|r| matches!(r.answer.verdict(), Verdict::Committed(_)));
            let original = ops[0].answer.verdict();
            !committed && matches!(original, Verdict::Ambiguous | Verdict::Unexpected(_))
        })
        .map(|ops| ops[0].spec())
        .collect();
    let mut summary = ResolveSummary {
        open: open.len() as u64,
        ..ResolveSummary::default()
    };
    // A window of four in flight, not chunks of four in lockstep: one retry's backoff does
    // not hold three finished slots idle (a full run's `no_wait` cells spent 40 s here).
    let mut pending = open.into_iter();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.len() < RESOLVERS_IN_FLIGHT {
            let Some(spec) = pending.next() else { break };
            let api = Arc::clone(api);
            tasks.spawn(async move { resolve_one(&api, &spec, timeout).await });
        }
        let Some(joined) = tasks.join_next().await else {
            return summary;
        };
        let (retries, settled) = joined.unwrap_or((0, false));
        summary.retries += retries;
        summary.still_open += u64::from(!settled);
    }
}

async fn resolve_one(api: &Api, spec: &OpSpec, timeout: Duration) -> (u64, bool) {
    let mut backoff = Duration::from_millis(100);
    for attempt in 1..=RESOLVE_TRIES {
        let record = api.send(spec, Role::Resolve, RESOLVER_CLIENT, timeout).await;
        match record.answer.verdict() {
            Verdict::Committed(_) | Verdict::Refused { conclusive: true } => {
                return (u64::from(attempt), true);
            }
            _ => {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
    (u64::from(RESOLVE_TRIES), false)
}

/// Replays a seeded sample of acknowledged keys; returns how many were sent.
pub async fn probe_replays(api: &Api, seed: u64, timeout: Duration) -> u64 {
    let records = api.recorder().snapshot();
    let acknowledged: Vec<OpSpec> = by_key(&records)
        .into_values()
        .filter(|ops| {
            ops.iter()
                .any(|r| matches!(r.answer.verdict(), Verdict::Committed(_)))
        })
        .map(|ops| ops[0].spec())
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5EED_0F92);
    let sample: Vec<&OpSpec> = acknowledged.choose_multiple(&mut rng, PROBES_MAX).collect();
    for spec in &sample {
        api.send(spec, Role::Probe, PROBER_CLIENT, timeout).await;
    }
    sample.len() as u64
}
