//! Firing one scheduled fault, and proving it happened: each fault is counted by its
//! observed effect (a session gone from `pg_stat_activity` or the processlist, a stopped or
//! new service process, a new server start time, the proxy's counters, abandoned
//! requests), never by the attempt. A fault with no observable effect fails the run.

use std::os::unix::process::ExitStatusExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustix::process::Signal;
use serde::Serialize;
use sqlx::Connection;

use super::client::Knobs;
use super::gate::ChaosRedis;
use super::schedule::{FaultKind, Planned};
use super::server::{Held, ServerUnderTest};
use super::service::Service;

/// Bound on waiting for a fault's effect to show.
const OBSERVE_WAIT: Duration = Duration::from_secs(3);
/// How long a probe through a blackholed proxy may take before it counts as silence.
const SILENCE_PROBE: Duration = Duration::from_millis(300);

/// What the runner may act on.
#[derive(Debug)]
pub struct Env<'a> {
    /// The service process.
    pub service: &'a mut Service,
    /// The private server and its proxy (none for SQLite).
    pub server: Option<&'a mut ServerUnderTest>,
    /// The clients' knobs.
    pub knobs: &'a Knobs,
    /// The gate's private Redis (`+gate` cells only).
    pub redis: Option<&'a mut ChaosRedis>,
    /// When the run started.
    pub started: Instant,
}

/// One fault as it happened.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    /// What.
    pub kind: FaultKind,
    /// Scheduled for (ms since the run started).
    pub planned_ms: u64,
    /// Began (ms since the run started).
    pub start_ms: u64,
    /// Over, everything healed (ms since the run started).
    pub end_ms: u64,
    /// Planned hold.
    pub hold_ms: u64,
    /// Planned delay or timeout.
    pub param_ms: u64,
    /// Whether its effect was observed.
    pub observed: bool,
    /// How much effect: sessions gone, connections reset, requests abandoned; 1 for a
    /// pause, a restart or a refused connection.
    pub effect_count: u64,
    /// What was observed, in words.
    pub effect: String,
    /// For `service_term`: how long the graceful shutdown took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drain_ms: Option<u64>,
    /// For `service_term`: the exit status was not a clean exit within the grace period.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unclean_exit: Option<String>,
    /// Why the injection itself failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// What one injection observed.
struct Effect {
    count: u64,
    text: String,
    drain_ms: Option<u64>,
    unclean_exit: Option<String>,
}

impl Effect {
    fn new(count: u64, text: String) -> Self {
        Self {
            count,
            text,
            drain_ms: None,
            unclean_exit: None,
        }
    }
}

fn ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Fires `planned` and heals afterwards, whatever happened.
pub async fn inject(env: &mut Env<'_>, planned: &Planned) -> FaultEvent {
    let start_ms = ms(env.started);
    let result = fire(env, planned).await;
    let healed = heal(env).await;
    let mut event = FaultEvent {
        kind: planned.kind,
        planned_ms: planned.at_ms,
        start_ms,
        end_ms: ms(env.started),
        hold_ms: planned.hold_ms,
        param_ms: planned.param_ms,
        observed: false,
        effect_count: 0,
        effect: String::new(),
        drain_ms: None,
        unclean_exit: None,
        error: None,
    };
    match result {
        Ok(effect) => {
            event.observed = effect.count > 0;
            event.effect_count = effect.count;
            event.effect = effect.text;
            event.drain_ms = effect.drain_ms;
            event.unclean_exit = effect.unclean_exit;
        }
        Err(error) => event.error = Some(format!("{error:#}")),
    }
    if let Err(error) = healed {
        let note = format!("healing failed: {error:#}");
        event.error = Some(event.error.map_or(note.clone(), |e| format!("{e}; {note}")));
    }
    event
}

/// Lifts every proxy fault and every client knob, and makes sure the service runs.
async fn heal(env: &mut Env<'_>) -> anyhow::Result<()> {
    env.knobs.abandon_timeout_ms.store(0, Ordering::Relaxed);
    if let Some(server) = env.server.as_deref() {
        let proxy = server.proxy();
        proxy.blackhole(false);
        proxy.delay(Duration::ZERO);
        proxy.refuse_new(false);
    }
    if env.service.pid().is_some() {
        if env.service.proc_state() == Some('T') {
            env.service.signal(Signal::CONT)?;
        }
    } else {
        env.service.restart().await?;
    }
    Ok(())
}

async fn fire(env: &mut Env<'_>, planned: &Planned) -> anyhow::Result<Effect> {
    let hold = Duration::from_millis(planned.hold_ms);
    match planned.kind {
        FaultKind::Pause => pause(env.service, hold).await,
        FaultKind::RedisKill => {
            let redis = env
                .redis
                .as_deref_mut()
                .ok_or_else(|| anyhow::anyhow!("redis_kill needs the gate's Redis"))?;
            Ok(Effect::new(1, redis.kill_and_restart()?))
        }
        FaultKind::ServiceKill => {
            let old = env.service.pid();
            let status = env.service.kill().await?;
            let ready = env.service.restart().await?;
            let new = env.service.pid();
            let killed = status.signal() == Some(Signal::KILL.as_raw());
            Ok(Effect::new(
                u64::from(killed && new.is_some() && new != old),
                format!(
                    "pid {old:?} exited with {status}; pid {new:?} ready after {} ms",
                    ready.as_millis()
                ),
            ))
        }
        FaultKind::ServiceTerm => {
            let old = env.service.pid();
            let grace = env.service.config().shutdown_grace;
            let (status, drain) = env.service.terminate(grace + Duration::from_secs(5)).await?;
            let ready = env.service.restart().await?;
            let new = env.service.pid();
            let mut effect = Effect::new(
                u64::from(new.is_some() && new != old),
                format!(
                    "SIGTERM: pid {old:?} exited with {status} after {} ms; pid {new:?} ready after {} ms",
                    drain.as_millis(),
                    ready.as_millis()
                ),
            );
            effect.drain_ms = Some(u64::try_from(drain.as_millis()).unwrap_or(u64::MAX));
            if !status.success() || drain > grace + Duration::from_secs(1) {
                effect.unclean_exit = Some(format!(
                    "exited with {status} after {} ms (grace {} ms)",
                    drain.as_millis(),
                    grace.as_millis()
                ));
            }
            Ok(effect)
        }
        FaultKind::ClientAbandon => {
            let before = env.knobs.abandoned.load(Ordering::Relaxed);
            env.knobs
                .abandon_timeout_ms
                .store(planned.param_ms.max(1), Ordering::Relaxed);
            tokio::time::sleep(hold).await;
            env.knobs.abandon_timeout_ms.store(0, Ordering::Relaxed);
            // Requests sent just before the knob went back still time out.
            tokio::time::sleep(Duration::from_millis(planned.param_ms + 50)).await;
            let abandoned = env.knobs.abandoned.load(Ordering::Relaxed) - before;
            Ok(Effect::new(
                abandoned,
                format!(
                    "{abandoned} requests abandoned at client timeouts of 50 µs to {} ms",
                    planned.param_ms
                ),
            ))
        }
        FaultKind::PoolExhaustion => {
            let server = env
                .server
                .as_deref()
                .ok_or_else(|| anyhow::anyhow!("pool_exhaustion needs a database server"))?;
            pool_exhaustion(server, env.service, hold).await
        }
        kind => {
            let server = env
                .server
                .as_deref_mut()
                .ok_or_else(|| anyhow::anyhow!("{} needs a database server", kind.as_str()))?;
            fire_on_server(server, planned, hold).await
        }
    }
}

async fn pause(service: &mut Service, hold: Duration) -> anyhow::Result<Effect> {
    service.signal(Signal::STOP)?;
    let stopped = wait_until(|| service.proc_state() == Some('T')).await;
    tokio::time::sleep(hold).await;
    service.signal(Signal::CONT)?;
    let resumed = wait_until(|| service.proc_state().is_some_and(|s| s != 'T')).await;
    Ok(Effect::new(
        u64::from(stopped && resumed),
        format!(
            "pid {:?} {} for {} ms, then {}",
            service.pid(),
            if stopped {
                "stopped (state T)"
            } else {
                "NOT seen stopped"
            },
            hold.as_millis(),
            if resumed { "resumed" } else { "NOT seen resumed" }
        ),
    ))
}

async fn fire_on_server(
    server: &mut ServerUnderTest,
    planned: &Planned,
    hold: Duration,
) -> anyhow::Result<Effect> {
    match planned.kind {
        FaultKind::KillSessions => kill_sessions(server).await,
        FaultKind::DbRestart | FaultKind::DbCrash => {
            let crash = planned.kind == FaultKind::DbCrash;
            let (old_pid, old_start) = (server.pid(), server.started_at().await?);
            let started = Instant::now();
            let what = server.restart(crash).await?;
            let (new_pid, new_start) = (server.pid(), server.started_at().await?);
            // MariaDB reports its start in whole seconds: the new pid tells two starts apart.
            let later = match server.backend() {
                stockguard_testkit::Backend::Postgres => new_start > old_start,
                _ => new_start >= old_start,
            };
            Ok(Effect::new(
                u64::from(later && new_pid.is_some() && new_pid != old_pid),
                format!(
                    "{what}: server pid {old_pid:?} → {new_pid:?}, start time {:?} → {:?}, back after {} ms",
                    unix_ms(old_start),
                    unix_ms(new_start),
                    started.elapsed().as_millis()
                ),
            ))
        }
        FaultKind::PeerCrash => {
            let started = Instant::now();
            server.crash_peer().await?;
            Ok(Effect::new(
                1,
                format!(
                    "SIGKILL of Galera node 1, restarted, rejoined and synced after {} ms",
                    started.elapsed().as_millis()
                ),
            ))
        }
        FaultKind::ProxyReset => {
            let proxy = server.proxy();
            let refused_before = proxy.connections_refused();
            proxy.refuse_new(true);
            let reset = proxy.reset_all().await;
            tokio::time::sleep(hold).await;
            proxy.refuse_new(false);
            let refused = proxy.connections_refused() - refused_before;
            Ok(Effect::new(
                reset as u64,
                format!(
                    "{reset} connections reset; {refused} new ones refused in {} ms",
                    hold.as_millis()
                ),
            ))
        }
        FaultKind::ProxyBlackhole => {
            server.proxy().blackhole(true);
            let silent = server.probe_through_proxy(SILENCE_PROBE).await;
            tokio::time::sleep(hold.saturating_sub(SILENCE_PROBE)).await;
            server.proxy().blackhole(false);
            let after = server.probe_through_proxy(OBSERVE_WAIT).await;
            Ok(Effect::new(
                u64::from(silent.is_err() && after.is_ok()),
                format!(
                    "probe through the proxy while blackholed: {}; after lifting: {}",
                    silent.map_or_else(|e| format!("silent ({e})"), |t| format!("ANSWERED in {t:?}")),
                    after.map_or_else(|e| format!("FAILED ({e})"), |t| format!("answered in {t:?}"))
                ),
            ))
        }
        FaultKind::ProxyDelay => {
            let delay = Duration::from_millis(planned.param_ms);
            server.proxy().delay(delay);
            let probe = server.probe_through_proxy(OBSERVE_WAIT).await;
            tokio::time::sleep(hold.saturating_sub(probe.clone().unwrap_or_default())).await;
            server.proxy().delay(Duration::ZERO);
            let slowed = probe.as_ref().is_ok_and(|t| *t >= delay);
            Ok(Effect::new(
                u64::from(slowed),
                format!(
                    "{} ms per chunk: a probe's connect and SELECT 1 took {}",
                    delay.as_millis(),
                    probe.map_or_else(|e| format!("FAILED ({e})"), |t| format!("{t:?}"))
                ),
            ))
        }
        FaultKind::ConnectionLimit => connection_limit(server, hold).await,
        other => anyhow::bail!("{} is not a server fault", other.as_str()),
    }
}

async fn kill_sessions(server: &ServerUnderTest) -> anyhow::Result<Effect> {
    let deadline = Instant::now() + OBSERVE_WAIT;
    let mut ids = server.service_sessions().await?;
    while ids.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        ids = server.service_sessions().await?;
    }
    server.kill_sessions(&ids).await?;
    let mut remaining = ids.clone();
    while !remaining.is_empty() && Instant::now() < deadline + OBSERVE_WAIT {
        let now = server.service_sessions().await?;
        remaining.retain(|id| now.contains(id));
        if !remaining.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let gone = ids.len() - remaining.len();
    Ok(Effect::new(
        gone as u64,
        format!(
            "killed {} sessions; {gone} gone from the server's session list",
            ids.len()
        ),
    ))
}

async fn connection_limit(server: &ServerUnderTest, hold: Duration) -> anyhow::Result<Effect> {
    let proxy = server.proxy();
    proxy.refuse_new(true);
    let reset = proxy.reset_all().await;
    // The reset sessions free their slots once the server notices; the runner takes them.
    let deadline = Instant::now() + OBSERVE_WAIT;
    while !server.service_sessions().await?.is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (held, refusal) = server.fill_connection_slots().await;
    proxy.refuse_new(false);
    let tries_before = proxy.connections_accepted();
    tokio::time::sleep(hold).await;
    let tries = proxy.connections_accepted() - tries_before;
    let held_count = held.len();
    for conn in held {
        let closed = match conn {
            Held::Pg(conn) => conn.close().await,
            Held::My(conn) => conn.close().await,
        };
        drop(closed);
    }
    Ok(Effect::new(
        u64::from(refusal.is_some()),
        format!(
            "{reset} connections reset; runner held {held_count} slots, then {}; the service tried {tries} \
             connections while they were held",
            refusal.map_or_else(|| "was NOT refused".to_owned(), |e| format!("was refused: {e}")),
        ),
    ))
}

/// Holds every row locked for `hold`, watching the service's sessions queue up on the locks
/// and its pool run dry. The effect is the peak count of sessions waiting on the locks.
async fn pool_exhaustion(
    server: &ServerUnderTest,
    service: &Service,
    hold: Duration,
) -> anyhow::Result<Effect> {
    // The holder may lose a deadlock or time out behind the service's own transactions;
    // a few tries, as an operator's job would.
    let mut attempt = 1;
    let (holder, rows) = loop {
        match server.lock_every_row().await {
            Ok(held) => break held,
            Err(error) if attempt < 3 => {
                eprintln!("pool_exhaustion: taking the locks failed ({error:#}); trying again");
                attempt += 1;
            }
            Err(error) => return Err(error),
        }
    };
    let until = Instant::now() + hold;
    let (mut waiting_peak, mut in_use_peak, mut pool_size) = (0_i64, 0_u64, 0_u64);
    while Instant::now() < until {
        waiting_peak = waiting_peak.max(server.lock_waiters().await.unwrap_or(0));
        if let Some((in_use, size)) = service.pool_gauges().await {
            in_use_peak = in_use_peak.max(in_use);
            pool_size = size;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    holder.release().await;
    Ok(Effect::new(
        u64::try_from(waiting_peak).unwrap_or(0),
        format!(
            "locked {rows} rows for {} ms: up to {waiting_peak} service sessions waited on them; \
             pooled connections in use peaked at {in_use_peak} of {pool_size}",
            hold.as_millis()
        ),
    ))
}

async fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + OBSERVE_WAIT;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn unix_ms(time: std::time::SystemTime) -> u128 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}
