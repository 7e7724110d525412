//! Refusals over HTTP (docs/redis.md): the flash sale after sell-out, through the `stockguard`
//! service with the Redis admission gate in front. The lean client's requesters send keyed
//! one-unit deductions (a fresh Idempotency-Key each, as buyers' clients do) for a fixed time,
//! and the gate refuses every one (409 `insufficient_stock`) without a database call: twice,
//! once with the gate's sold-out hint (the default: refused in the service, no Redis call) and
//! once with it off (every refusal asks Redis). Then the same client, requesters and
//! connections send `GET /healthz` for as long: the machine's trivial-request ceiling. The
//! figures are refusals/s ÷ that ceiling.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Method;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Serialize;
use stockguard_api::store::StoreSettings;
use stockguard_core::{InventoryStore, SkuId};
use stockguard_redis_gate::{Gate, GateConfig, GateStats, RedisTarget};
use stockguard_testkit::Backend;

use crate::db::{FreshDatabase, RawPool, in_fresh_database};
use crate::http::{LeanClient, ServiceUnderTest, healthz_ceiling};

/// One case per database.
#[derive(Debug, Clone, Serialize)]
pub struct FlashHttpSpec {
    /// The database.
    pub backend: Backend,
    /// Concurrent requesters, each with its own keep-alive connection.
    pub requesters: usize,
    /// How long the refusals run, and then the ceiling.
    pub duration: Duration,
    /// Pooled connections of the service's store.
    pub pool_size: u32,
    /// The gate's Redis.
    #[serde(skip)]
    pub redis_url: String,
}

impl FlashHttpSpec {
    /// How the case is named in the progress log.
    pub fn label(&self) -> String {
        format!("{} flash refusals over http x{}", self.backend, self.requesters).to_lowercase()
    }
}

/// What one case measured.
#[derive(Debug, Clone, Serialize)]
pub struct FlashHttpResult {
    /// What ran.
    pub spec: FlashHttpSpec,
    /// 409 `insufficient_stock` answers per second, the sold-out hint on (the default).
    pub refusals_per_s: f64,
    /// The same with the hint off: every refusal is a Redis call.
    pub refusals_without_hint_per_s: f64,
    /// The share of the refusals (hint on) that the hint answered without a Redis call.
    pub hint_share: f64,
    /// `GET /healthz` answers per second, same client.
    pub ceiling_per_s: f64,
    /// Answers other than a refusal (none expected).
    pub other_answers: u64,
    /// Ledger rows written (none expected: every request was refused at Redis).
    pub ledger_rows: i64,
}

impl FlashHttpResult {
    /// Refusals/s ÷ the ceiling.
    pub fn share(&self) -> f64 {
        self.share_of(self.refusals_per_s)
    }

    /// Refusals/s without the hint ÷ the ceiling.
    pub fn share_without_hint(&self) -> f64 {
        self.share_of(self.refusals_without_hint_per_s)
    }

    fn share_of(&self, per_s: f64) -> f64 {
        if self.ceiling_per_s > 0.0 {
            per_s / self.ceiling_per_s
        } else {
            0.0
        }
    }

    /// Why the case fails the run.
    pub fn failure(&self) -> Option<String> {
        (self.other_answers > 0 || self.ledger_rows != 0).then(|| {
            format!(
                "{}: {} answers other than a refusal, {} ledger rows",
                self.spec.label(),
                self.other_answers,
                self.ledger_rows
            )
        })
    }
}

/// One case for each of `databases`.
pub fn flash_http_specs(
    databases: &[Backend],
    requesters: usize,
    duration: Duration,
    pool_size: u32,
    redis_url: &str,
) -> Vec<FlashHttpSpec> {
    databases
        .iter()
        .map(|backend| FlashHttpSpec {
            backend: *backend,
            requesters,
            duration,
            pool_size: if *backend == Backend::Sqlite {
                pool_size.min(crate::db::SQLITE_POOL_MAX)
            } else {
                pool_size
            },
            redis_url: redis_url.to_owned(),
        })
        .collect()
}

/// Runs one case in a fresh database and drops it afterwards, whatever happens.
pub async fn run_flash_http(spec: FlashHttpSpec) -> anyhow::Result<FlashHttpResult> {
    in_fresh_database(spec.backend, async |database| run_in(&spec, database).await).await
}

async fn run_in(spec: &FlashHttpSpec, database: &FreshDatabase) -> anyhow::Result<FlashHttpResult> {
    let name = "flash-0".to_owned();
    let with_hint = refusals_through_service(spec, database, &name, true).await?;
    let without_hint = refusals_through_service(spec, database, &name, false).await?;
    Ok(FlashHttpResult {
        spec: spec.clone(),
        refusals_per_s: with_hint.refusals_per_s,
        refusals_without_hint_per_s: without_hint.refusals_per_s,
        hint_share: with_hint.hint_share,
        ceiling_per_s: with_hint.ceiling_per_s,
        other_answers: with_hint.other_answers + without_hint.other_answers,
        ledger_rows: with_hint.ledger_rows.max(without_hint.ledger_rows),
    })
}

/// What one service measured.
struct Phase {
    refusals_per_s: f64,
    hint_share: f64,
    ceiling_per_s: f64,
    other_answers: u64,
    ledger_rows: i64,
}

/// Starts the service with the gate (the sold-out hint on or off) in a namespace of its own,
/// sends refusals, and, with the hint on, the ceiling after them.
async fn refusals_through_service(
    spec: &FlashHttpSpec,
    database: &FreshDatabase,
    name: &str,
    sold_out_hint: bool,
) -> anyhow::Result<Phase> {
    let sku = SkuId::parse(name)?;
    let mut config = GateConfig::new(RedisTarget::parse(&spec.redis_url)?);
    config.namespace = format!("bench{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    config.redis_timeout = Duration::from_secs(2);
    if !sold_out_hint {
        config.sold_out_hint = Duration::ZERO;
    }
    let mut settings = StoreSettings::new(database.target()?);
    settings.pool_size = spec.pool_size;
    // The service opens (and migrates) the store; the SKU is written after.
    let service = ServiceUnderTest::start_for(settings, spec.requesters, None, Some(config.clone())).await?;
    let admin = RawPool::connect(database, 2).await?;
    // Sold out: every attempt is refused, at the gate.
    let stocked = admin.reset_inventory(&[name.to_owned()], &[0]).await;
    admin.close().await;
    let measured = match stocked {
        Ok(()) => drive(spec, &service, name, sold_out_hint).await,
        Err(error) => Err(error),
    };
    let hint_share = service.gate().map_or(0.0, |gate| {
        let stats = gate.stats();
        GateStats::get(&stats.refused_by_hint) as f64 / GateStats::get(&stats.refused).max(1) as f64
    });
    let ledger_rows = service
        .store()
        .snapshot()
        .await
        .map(|skus| skus.iter().map(|s| s.ledger_rows).sum::<i64>());
    let stopped = service.shutdown().await;
    // The keys the gate made, on the shared Redis.
    if let Ok(gate) = Gate::connect(config).await {
        let _ = gate.forget(&sku).await;
    }
    let (refusals_per_s, ceiling_per_s, other_answers) = measured?;
    stopped?;
    Ok(Phase {
        refusals_per_s,
        hint_share,
        ceiling_per_s,
        other_answers,
        ledger_rows: ledger_rows?,
    })
}

/// Refusals per second, the ceiling, and the answers that were not refusals.
async fn drive(
    spec: &FlashHttpSpec,
    service: &ServiceUnderTest,
    sku: &str,
    with_ceiling: bool,
) -> anyhow::Result<(f64, f64, u64)> {
    let client = Arc::new(LeanClient::connect(service.address(), spec.requesters).await?);
    let authorization = HeaderValue::from_str(&format!("Bearer {}", service.auth_token()))?;
    let path = format!("/v1/skus/{sku}/deduct");
    let (refused, other) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let started = Instant::now();
    let until = started + spec.duration;
    let tasks: Vec<_> = (0..spec.requesters)
        .map(|requester| {
            let (client, authorization, path) = (Arc::clone(&client), authorization.clone(), path.clone());
            let (refused, other) = (Arc::clone(&refused), Arc::clone(&other));
            let run = uuid::Uuid::new_v4().simple().to_string();
            tokio::spawn(async move {
                let mut attempt = 0u64;
                while Instant::now() < until {
                    attempt += 1;
                    let key = HeaderValue::from_str(&format!("{}-{requester}-{attempt}", &run[..12]))?;
                    let request = client
                        .request(Method::POST, &path)
                        .header(AUTHORIZATION, authorization.clone())
                        .header("idempotency-key", key)
                        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
                        .body(Full::new(Bytes::from_static(br#"{"quantity":1}"#)))?;
                    let (status, body) = client.send(request).await?;
                    let is_refusal =
                        status.as_u16() == 409 && body.windows(18).any(|w| w == b"insufficient_stock");
                    if is_refusal { &refused } else { &other }.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a requester panicked")??;
    }
    let refusals_per_s = refused.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let ceiling_per_s = if with_ceiling {
        healthz_ceiling(&client, spec.requesters, spec.duration).await?
    } else {
        0.0
    };
    Ok((refusals_per_s, ceiling_per_s, other.load(Ordering::Relaxed)))
}
