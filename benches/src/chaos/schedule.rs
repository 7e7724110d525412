//! The fault kinds and a seeded schedule of them: every applicable kind fires in every
//! round, in a seeded order, with seeded durations and gaps, until the cell's time is up
//! (at least one full round).

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use stockguard_testkit::Backend;

use super::server::Cluster;

/// Load before the first fault, so the pool is warm and stock is moving.
pub const WARMUP: Duration = Duration::from_millis(1_000);

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// End the service's database sessions (`pg_terminate_backend`, `KILL CONNECTION`).
    KillSessions,
    /// SIGSTOP the service, then SIGCONT.
    Pause,
    /// SIGKILL the service and start it again on the same port.
    ServiceKill,
    /// SIGTERM the service under load (graceful shutdown), then start it again.
    ServiceTerm,
    /// Restart the database server cleanly.
    DbRestart,
    /// SIGKILL the database server and start it again (crash recovery).
    DbCrash,
    /// Reset every proxied connection and refuse new ones for a moment.
    ProxyReset,
    /// Stop forwarding in both directions (a dead link), then lift it.
    ProxyBlackhole,
    /// Delay every forwarded chunk, then lift it.
    ProxyDelay,
    /// Hold every connection slot of the server so the service's reconnects are refused
    /// ("too many connections").
    ConnectionLimit,
    /// Every client uses a timeout of a few milliseconds and abandons its request.
    ClientAbandon,
    /// A transaction outside the service locks every SKU row (and bucket), as a long admin
    /// job would: the service's calls hold their pooled connections while they wait, the
    /// pool runs dry and later calls wait for a connection.
    PoolExhaustion,
    /// SIGKILL the gate's Redis and start it again empty (`+gate` cells only).
    RedisKill,
    /// SIGKILL a Galera node the service does not use, start it again and wait until it has
    /// rejoined (`galera:` cells only; `db_restart` and `db_crash` hit the service's node).
    PeerCrash,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 14] = [
        FaultKind::KillSessions,
        FaultKind::Pause,
        FaultKind::ServiceKill,
        FaultKind::ServiceTerm,
        FaultKind::DbRestart,
        FaultKind::DbCrash,
        FaultKind::ProxyReset,
        FaultKind::ProxyBlackhole,
        FaultKind::ProxyDelay,
        FaultKind::ConnectionLimit,
        FaultKind::ClientAbandon,
        FaultKind::PoolExhaustion,
        FaultKind::RedisKill,
        FaultKind::PeerCrash,
    ];

    /// The name in logs and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::KillSessions => "kill_sessions",
            FaultKind::Pause => "pause",
            FaultKind::ServiceKill => "service_kill",
            FaultKind::ServiceTerm => "service_term",
            FaultKind::DbRestart => "db_restart",
            FaultKind::DbCrash => "db_crash",
            FaultKind::ProxyReset => "proxy_reset",
            FaultKind::ProxyBlackhole => "proxy_blackhole",
            FaultKind::ProxyDelay => "proxy_delay",
            FaultKind::ConnectionLimit => "connection_limit",
            FaultKind::ClientAbandon => "client_abandon",
            FaultKind::PoolExhaustion => "pool_exhaustion",
            FaultKind::RedisKill => "redis_kill",
            FaultKind::PeerCrash => "peer_crash",
        }
    }

    /// Whether the kind applies to a cell: embedded SQLite has no server, sessions or
    /// network, so it gets the service and client faults only; `redis_kill` needs the gate;
    /// `peer_crash` needs a Galera cluster. `connection_limit` runs on single servers only:
    /// Galera's nodes keep MariaDB's default limit (151), too many slots to fill, and filling
    /// a Patroni member's slots would starve Patroni's own session and fail it over.
    pub fn applies_to(self, backend: Backend, gated: bool, cluster: Option<Cluster>) -> bool {
        match self {
            FaultKind::RedisKill => gated,
            FaultKind::PeerCrash => cluster == Some(Cluster::Galera),
            FaultKind::ConnectionLimit if cluster.is_some() => false,
            _ => {
                backend != Backend::Sqlite
                    || matches!(
                        self,
                        FaultKind::Pause
                            | FaultKind::ServiceKill
                            | FaultKind::ServiceTerm
                            | FaultKind::ClientAbandon
                    )
            }
        }
    }

    /// The kinds that apply to a cell on `backend`, with the gate or without, on a Galera
    /// cluster or not.
    pub fn for_cell(backend: Backend, gated: bool, cluster: Option<Cluster>) -> Vec<FaultKind> {
        Self::ALL
            .into_iter()
            .filter(|k| k.applies_to(backend, gated, cluster))
            .collect()
    }

    /// A rough cost (ms) beyond its hold, to plan how many fit in a cell.
    fn overhead_ms(self) -> u64 {
        match self {
            FaultKind::KillSessions | FaultKind::ClientAbandon => 200,
            FaultKind::Pause | FaultKind::ProxyReset | FaultKind::ProxyDelay => 300,
            FaultKind::ProxyBlackhole | FaultKind::ConnectionLimit | FaultKind::PoolExhaustion => 700,
            FaultKind::ServiceKill | FaultKind::RedisKill => 1_000,
            FaultKind::ServiceTerm => 1_500,
            FaultKind::DbRestart => 2_500,
            FaultKind::DbCrash => 3_000,
            // A killed node's restart, rejoin and sync: 15 s in the first run here.
            FaultKind::PeerCrash => 15_000,
        }
    }

    /// Seeded hold (ms) and parameter (a delay or a timeout, ms) for one firing.
    fn draw(self, rng: &mut StdRng) -> (u64, u64) {
        match self {
            FaultKind::Pause | FaultKind::ProxyBlackhole => (rng.random_range(400..=1_500), 0),
            FaultKind::ProxyReset => (rng.random_range(200..=600), 0),
            FaultKind::ProxyDelay => (rng.random_range(500..=1_500), rng.random_range(20..=120)),
            FaultKind::ConnectionLimit => (rng.random_range(500..=1_500), 0),
            // Past the service's lock timeout (1 s) at times, so both the waits that give up
            // and the ones that get the row are exercised.
            FaultKind::PoolExhaustion => (rng.random_range(800..=2_000), 0),
            FaultKind::ClientAbandon => (rng.random_range(400..=1_000), rng.random_range(1..=5)),
            _ => (0, 0),
        }
    }
}

/// One scheduled firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Planned {
    /// Not before this, in ms since the run started.
    pub at_ms: u64,
    /// What.
    pub kind: FaultKind,
    /// How long the fault stays on (pause, blackhole, delay, held slots, abandon window).
    pub hold_ms: u64,
    /// The proxy delay, or the abandoning clients' timeout, in ms.
    pub param_ms: u64,
}

/// Every kind in `kinds`, in seeded rounds, while each firing is planned to heal within
/// `duration`; the first round is always planned whole, so every kind fires at least once.
/// The budget is "60 s each": planning past it (a last round that started at 55 s
/// ran to about 76 s) made the full profile 14 minutes longer than its 51 minutes of load.
pub fn plan(kinds: &[FaultKind], duration: Duration, seed: u64) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xFA_017);
    let budget_ms = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let mut at_ms = u64::try_from(WARMUP.as_millis()).unwrap_or(0);
    let mut planned = Vec::new();
    let mut first_round = true;
    loop {
        let mut round = kinds.to_vec();
        round.shuffle(&mut rng);
        for kind in round {
            let (hold_ms, param_ms) = kind.draw(&mut rng);
            let healed_ms = at_ms + hold_ms + kind.overhead_ms();
            if !first_round && healed_ms > budget_ms {
                return planned;
            }
            planned.push(Planned {
                at_ms,
                kind,
                hold_ms,
                param_ms,
            });
            at_ms = healed_ms + rng.random_range(300..=900);
        }
        first_round = false;
        if at_ms >= budget_ms || kinds.is_empty() {
            return planned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_fires_at_least_once_and_the_plan_is_seeded() {
        let kinds = FaultKind::for_cell(Backend::Postgres, true, None);
        assert_eq!(kinds.len(), FaultKind::ALL.len() - 1, "all but peer_crash");
        assert_eq!(
            FaultKind::for_cell(Backend::Postgres, false, None).len(),
            FaultKind::ALL.len() - 2
        );
        let short = plan(&kinds, Duration::from_secs(1), 7);
        for kind in &kinds {
            assert!(short.iter().any(|p| p.kind == *kind), "{kind:?}");
        }
        assert_eq!(short, plan(&kinds, Duration::from_secs(1), 7));
        assert_ne!(short, plan(&kinds, Duration::from_secs(1), 8));
        let long = plan(&kinds, Duration::from_secs(120), 7);
        assert!(long.len() > short.len());
        assert!(long.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        // Past the first round, every firing is planned to heal inside the budget.
        let last = long.last().unwrap();
        assert!(last.at_ms + last.hold_ms + last.kind.overhead_ms() <= 120_000);
        let sixty = plan(&kinds, Duration::from_secs(60), 20261202);
        let last = sixty.last().unwrap();
        assert!(last.at_ms + last.hold_ms + last.kind.overhead_ms() <= 60_000);
        assert!(sixty.len() > kinds.len(), "more than one round fits in 60 s");
    }

    #[test]
    fn galera_swaps_connection_limit_for_peer_crash() {
        let kinds = FaultKind::for_cell(Backend::MySql, false, Some(Cluster::Galera));
        assert!(kinds.contains(&FaultKind::PeerCrash));
        assert!(kinds.contains(&FaultKind::DbCrash));
        assert!(!kinds.contains(&FaultKind::ConnectionLimit));
        assert!(!FaultKind::for_cell(Backend::MySql, false, None).contains(&FaultKind::PeerCrash));
        let pg_ha = FaultKind::for_cell(Backend::Postgres, false, Some(Cluster::PgHa));
        assert!(pg_ha.contains(&FaultKind::DbCrash) && !pg_ha.contains(&FaultKind::PeerCrash));
        assert!(!pg_ha.contains(&FaultKind::ConnectionLimit));
    }

    #[test]
    fn sqlite_gets_the_service_and_client_faults_only() {
        assert_eq!(
            FaultKind::for_cell(Backend::Sqlite, false, None),
            vec![
                FaultKind::Pause,
                FaultKind::ServiceKill,
                FaultKind::ServiceTerm,
                FaultKind::ClientAbandon
            ]
        );
    }
}
