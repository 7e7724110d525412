//! What a server really does, asked at start-up instead of assumed from its name.
//!
//! Some engines accept a locking clause and quietly do something else: TiDB parses
//! `FOR UPDATE SKIP LOCKED` and ignores `SKIP LOCKED` (pingcap/tidb#69720), so a strategy built
//! on it degrades to waiting in line without any error. An adapter therefore tries each clause
//! its SQL relies on against a row another session holds, and the engine refuses every
//! strategy whose clause the server did not honour, with the reason, instead of running it.

use std::fmt;

use serde::Serialize;

use super::Strategy;

/// A locking clause a strategy's SQL relies on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LockFeature {
    /// `FOR UPDATE SKIP LOCKED`: pass over rows another transaction holds, without waiting.
    SkipLocked,
    /// `FOR UPDATE NOWAIT`: fail at once on a row another transaction holds.
    NoWait,
    /// `FOR NO KEY UPDATE` (PostgreSQL): a row lock that leaves the key share lock of a
    /// foreign-key check free.
    ForNoKeyUpdate,
}

impl LockFeature {
    /// Every feature a probe reports.
    pub const ALL: [LockFeature; 3] = [
        LockFeature::SkipLocked,
        LockFeature::NoWait,
        LockFeature::ForNoKeyUpdate,
    ];

    /// The clause as SQL writes it.
    pub fn clause(self) -> &'static str {
        match self {
            LockFeature::SkipLocked => "FOR UPDATE SKIP LOCKED",
            LockFeature::NoWait => "FOR UPDATE NOWAIT",
            LockFeature::ForNoKeyUpdate => "FOR NO KEY UPDATE",
        }
    }
}

impl fmt::Display for LockFeature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.clause())
    }
}

/// What a probe found for one [`LockFeature`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "found", rename_all = "snake_case")]
pub enum Support {
    /// Tried against a held row: it did what it says.
    Honoured,
    /// Accepted, but it did not do what it says (what happened instead is in `how`).
    Ignored {
        /// What the server did instead.
        how: String,
    },
    /// Refused by the server (the server's message).
    Unsupported {
        /// The server's error.
        error: String,
    },
    /// No adapter SQL on this server uses it (SQLite, the in-memory backend, or a clause
    /// this adapter never writes).
    NotApplicable,
}

impl Support {
    /// False when a strategy that relies on the feature would not get it.
    pub fn is_usable(&self) -> bool {
        matches!(self, Support::Honoured | Support::NotApplicable)
    }
}

impl fmt::Display for Support {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Support::Honoured => f.write_str("honoured"),
            Support::Ignored { how } => write!(f, "accepted but ignored ({how})"),
            Support::Unsupported { error } => write!(f, "refused ({error})"),
            Support::NotApplicable => f.write_str("not applicable"),
        }
    }
}

/// A Galera node's view of its cluster (MariaDB with `wsrep_on`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GaleraFacts {
    /// Nodes in the primary component (`wsrep_cluster_size`).
    pub cluster_size: u32,
    /// The adapter's causal wait ran: before a read that decides an answer (a key's ledger
    /// row, a miss, an order, a hold), this node applies every write the cluster committed
    /// before it. Sessions themselves keep `wsrep_sync_wait = 0` (see the MySQL adapter).
    pub causal_reads: bool,
    /// The pooled sessions' own `wsrep_sync_wait` (0: no causal wait inside a transaction).
    pub session_sync_wait: u32,
}

/// What one probe of the server found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerProbe {
    /// The product, as the server names itself: `PostgreSQL`, `MariaDB`, `MySQL`, `SQLite`.
    pub product: String,
    /// The version string the server reports.
    pub version: String,
    /// The isolation level a session of the adapter's pool runs at.
    pub isolation: String,
    /// Galera replication, when the server runs it.
    pub galera: Option<GaleraFacts>,
    /// `FOR UPDATE SKIP LOCKED`.
    pub skip_locked: Support,
    /// `FOR UPDATE NOWAIT`.
    pub nowait: Support,
    /// `FOR NO KEY UPDATE`.
    pub for_no_key_update: Support,
}

impl ServerProbe {
    /// A server with no row locks to probe (SQLite, memory): every feature not applicable.
    pub fn without_row_locks(product: &str, version: String) -> Self {
        Self {
            product: product.to_owned(),
            version,
            isolation: "serializable".to_owned(),
            galera: None,
            skip_locked: Support::NotApplicable,
            nowait: Support::NotApplicable,
            for_no_key_update: Support::NotApplicable,
        }
    }

    /// What was found for `feature`.
    pub fn support(&self, feature: LockFeature) -> &Support {
        match feature {
            LockFeature::SkipLocked => &self.skip_locked,
            LockFeature::NoWait => &self.nowait,
            LockFeature::ForNoKeyUpdate => &self.for_no_key_update,
        }
    }

    /// The strategies among `strategies` this server cannot honour: those whose SQL relies
    /// (per `features_of`, the adapter's own list) on a feature the probe did not find usable.
    pub fn refusals(
        &self,
        strategies: &[Strategy],
        features_of: impl Fn(Strategy) -> &'static [LockFeature],
    ) -> Vec<StrategyRefusal> {
        strategies
            .iter()
            .filter_map(|&strategy| {
                let feature = features_of(strategy)
                    .iter()
                    .copied()
                    .find(|feature| !self.support(*feature).is_usable())?;
                Some(StrategyRefusal {
                    strategy,
                    feature,
                    found: self.support(feature).clone(),
                })
            })
            .collect()
    }
}

/// A strategy refused because the server does not honour a clause its SQL relies on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StrategyRefusal {
    /// The strategy refused.
    pub strategy: Strategy,
    /// The first clause it relies on that the server does not honour.
    pub feature: LockFeature,
    /// What the probe found for that clause.
    pub found: Support,
}

impl fmt::Display for StrategyRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "`{}` relies on {}, which this server {}",
            self.strategy,
            self.feature,
            match &self.found {
                Support::Ignored { how } => format!("accepts but ignores ({how})"),
                Support::Unsupported { error } => format!("refuses ({error})"),
                other => other.to_string(),
            }
        )
    }
}

/// A probe and what the engine refuses because of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProbeReport {
    /// What the server does.
    pub probe: ServerProbe,
    /// Strategies refused from now on, each with its reason.
    pub refused: Vec<StrategyRefusal>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn postgres_like() -> ServerProbe {
        ServerProbe {
            product: "PostgreSQL".into(),
            version: "15.8".into(),
            isolation: "read committed".into(),
            galera: None,
            skip_locked: Support::Honoured,
            nowait: Support::Honoured,
            for_no_key_update: Support::Honoured,
        }
    }

    fn features(strategy: Strategy) -> &'static [LockFeature] {
        match strategy {
            Strategy::NoWait => &[LockFeature::NoWait],
            Strategy::Sharded => &[LockFeature::ForNoKeyUpdate, LockFeature::SkipLocked],
            _ => &[],
        }
    }

    #[test]
    fn a_server_that_honours_everything_refuses_nothing() {
        assert!(postgres_like().refusals(&Strategy::ALL, features).is_empty());
    }

    #[test]
    fn an_ignored_skip_locked_refuses_only_the_strategy_that_relies_on_it() {
        let probe = ServerProbe {
            skip_locked: Support::Ignored {
                how: "returned the row another transaction holds".into(),
            },
            ..postgres_like()
        };
        let refused = probe.refusals(&Strategy::ALL, features);
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].strategy, Strategy::Sharded);
        assert_eq!(refused[0].feature, LockFeature::SkipLocked);
        assert_eq!(
            refused[0].to_string(),
            "`sharded` relies on FOR UPDATE SKIP LOCKED, which this server accepts but ignores \
             (returned the row another transaction holds)"
        );
    }

    #[test]
    fn the_first_unusable_feature_is_the_reason_and_not_applicable_is_usable() {
        let probe = ServerProbe {
            for_no_key_update: Support::Unsupported {
                error: "syntax error".into(),
            },
            skip_locked: Support::Ignored { how: "waited".into() },
            nowait: Support::NotApplicable,
            ..postgres_like()
        };
        let refused = probe.refusals(&Strategy::ALL, features);
        assert_eq!(refused.len(), 1, "{refused:?}");
        assert_eq!(refused[0].feature, LockFeature::ForNoKeyUpdate);
        let sqlite = ServerProbe::without_row_locks("SQLite", "3.45".into());
        assert!(sqlite.refusals(&Strategy::ALL, features).is_empty());
    }
}
