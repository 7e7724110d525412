//! The load while faults fire: concurrent clients deducting with a fresh key each, a
//! restocker so commits keep happening, demand above supply so SKUs sell out again and
//! again, a hot SKU and cold ones, quantities 1–3, some clients with short timeouts that
//! abandon requests, and now and then a replay of an acknowledged key.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::client::{Api, Knobs};
use super::history::{OpKind, OpSpec, Role, TransportFailure, Verdict};

/// The restocker's client number in the history.
pub const RESTOCKER_CLIENT: u32 = 1_000;

/// What the load looks like.
#[derive(Debug, Clone, Serialize)]
pub struct LoadPlan {
    /// SKU ids; the first is the hot one.
    pub skus: Vec<String>,
    /// Initial stock of the hot SKU.
    pub hot_stock: i64,
    /// Initial stock of each cold SKU.
    pub cold_stock: i64,
    /// Share of deductions that go to the hot SKU.
    pub hot_share: f64,
    /// Concurrent deducting clients.
    pub clients: u32,
    /// How many of them use a short timeout and abandon slow requests.
    pub impatient_clients: u32,
    /// The patient clients' timeout: above the service's request timeout, so the service
    /// answers.
    pub patient_timeout_ms: u64,
    /// Range of the impatient clients' timeouts.
    pub impatient_timeout_ms: (u64, u64),
    /// Pause between a client's requests.
    pub think_ms: (u64, u64),
    /// Chance that a client re-sends its last acknowledged key instead of a new request.
    pub replay_chance: f64,
    /// Pause between restocks.
    pub restock_every_ms: (u64, u64),
    /// Units per restock.
    pub restock_units: (i64, i64),
    /// Bound on requests per client.
    pub requests_per_client_max: u64,
    /// Prefix of every key, unique per run.
    pub key_prefix: String,
}

impl LoadPlan {
    /// The load of every chaos cell: 16 clients (4 impatient) on 1 hot and 7 cold SKUs.
    /// `patient_timeout_ms` must exceed the service's request timeout.
    pub fn standard(key_prefix: String, patient_timeout_ms: u64) -> Self {
        let mut skus = vec!["hot".to_owned()];
        skus.extend((1..=7).map(|n| format!("cold-{n}")));
        Self {
            skus,
            hot_stock: 40,
            cold_stock: 10,
            hot_share: 0.6,
            clients: 16,
            impatient_clients: 4,
            patient_timeout_ms,
            impatient_timeout_ms: (150, 800),
            think_ms: (5, 30),
            replay_chance: 0.03,
            restock_every_ms: (20, 60),
            restock_units: (4, 16),
            requests_per_client_max: 200_000,
            key_prefix,
        }
    }
}

/// Runs the clients and the restocker until `stop` turns true; returns requests sent.
pub async fn run(
    api: Arc<Api>,
    knobs: Arc<Knobs>,
    plan: Arc<LoadPlan>,
    seed: u64,
    stop: watch::Receiver<bool>,
) -> u64 {
    let mut tasks = JoinSet::new();
    for client in 0..plan.clients {
        let (api, knobs, plan, stop) = (
            Arc::clone(&api),
            Arc::clone(&knobs),
            Arc::clone(&plan),
            stop.clone(),
        );
        tasks.spawn(deducting_client(api, knobs, plan, seed, client, stop));
    }
    tasks.spawn(restocker(Arc::clone(&api), Arc::clone(&plan), seed, stop));
    let mut sent = 0;
    while let Some(joined) = tasks.join_next().await {
        sent += joined.unwrap_or(0);
    }
    sent
}

fn rng_for(seed: u64, client: u32) -> StdRng {
    StdRng::seed_from_u64(seed ^ (u64::from(client) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

async fn deducting_client(
    api: Arc<Api>,
    knobs: Arc<Knobs>,
    plan: Arc<LoadPlan>,
    seed: u64,
    client: u32,
    stop: watch::Receiver<bool>,
) -> u64 {
    let mut rng = rng_for(seed, client);
    let own_timeout = if client < plan.impatient_clients {
        Duration::from_millis(rng.random_range(plan.impatient_timeout_ms.0..=plan.impatient_timeout_ms.1))
    } else {
        Duration::from_millis(plan.patient_timeout_ms)
    };
    let mut last_acknowledged: Option<OpSpec> = None;
    let mut sent = 0;
    while !*stop.borrow() && sent < plan.requests_per_client_max {
        let timeout = knobs.timeout(own_timeout, &mut rng);
        let abandoning = timeout != own_timeout;
        let replay = last_acknowledged
            .as_ref()
            .filter(|_| rng.random_bool(plan.replay_chance))
            .cloned();
        let (spec, role) = match replay {
            Some(spec) => (spec, Role::Replay),
            None => {
                let sku = if rng.random_bool(plan.hot_share) {
                    &plan.skus[0]
                } else {
                    &plan.skus[rng.random_range(1..plan.skus.len())]
                };
                let spec = OpSpec {
                    op: api.recorder().next_op(),
                    kind: OpKind::Deduct,
                    key: format!("{}-c{client}-{sent}", plan.key_prefix),
                    sku: sku.clone(),
                    quantity: rng.random_range(1..=3),
                };
                (spec, Role::Original)
            }
        };
        let record = api.send(&spec, role, client, timeout).await;
        sent += 1;
        match record.answer.verdict() {
            Verdict::Committed(_) if role == Role::Original => last_acknowledged = Some(spec),
            Verdict::Ambiguous
                if abandoning
                    && matches!(
                        record.answer,
                        super::history::Answer::Transport {
                            failure: TransportFailure::Timeout,
                            ..
                        }
                    ) =>
            {
                knobs.abandoned.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
        let think = rng.random_range(plan.think_ms.0..=plan.think_ms.1);
        tokio::time::sleep(Duration::from_millis(think)).await;
    }
    sent
}

async fn restocker(api: Arc<Api>, plan: Arc<LoadPlan>, seed: u64, stop: watch::Receiver<bool>) -> u64 {
    let mut rng = rng_for(seed, RESTOCKER_CLIENT);
    let mut sent = 0;
    while !*stop.borrow() && sent < plan.requests_per_client_max {
        let sku = if rng.random_bool(0.5) {
            &plan.skus[0]
        } else {
            &plan.skus[rng.random_range(1..plan.skus.len())]
        };
        let spec = OpSpec {
            op: api.recorder().next_op(),
            kind: OpKind::Restock,
            key: format!("{}-r-{sent}", plan.key_prefix),
            sku: sku.clone(),
            quantity: rng.random_range(plan.restock_units.0..=plan.restock_units.1),
        };
        api.send(
            &spec,
            Role::Original,
            RESTOCKER_CLIENT,
            Duration::from_millis(plan.patient_timeout_ms),
        )
        .await;
        sent += 1;
        let pause = rng.random_range(plan.restock_every_ms.0..=plan.restock_every_ms.1);
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
    sent
}
