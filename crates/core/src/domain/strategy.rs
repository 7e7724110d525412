//! The strategies: how a deduction is made safe against concurrent ones.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::InvalidInput;

/// How a deduction is made safe against concurrent deductions of the same SKU.
///
/// Every strategy gives the same observable result: stock never falls below zero, each
/// success writes exactly one ledger row in the same transaction, and idempotency keys
/// replay. They differ in how they wait, and so in throughput and latency under conflict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Strategy {
    /// Lock the row (`SELECT … FOR UPDATE`), check, write `read - q`, log, commit.
    /// The classic flow; waits in the lock queue under conflict.
    Pessimistic,
    /// Like `Pessimistic`, but fails at once with `LockTimeout` instead of waiting for a
    /// row another transaction holds (`FOR UPDATE NOWAIT`). For callers that shed load.
    NoWait,
    /// Read without a lock, then write only if the version is unchanged; on a version miss
    /// re-read and retry under the [`RetryPolicy`](crate::RetryPolicy).
    Optimistic,
    /// One conditional statement, `UPDATE … SET stock = stock - q WHERE stock >= q`, with the
    /// ledger insert in the same transaction. No read round trip, no version.
    Guarded,
    /// Group commit: concurrent deductions of one SKU queue in-process and a leader applies
    /// the whole batch in one transaction (one row lock, one commit, one ledger insert).
    Coalesced,
    /// Stock buckets: the SKU's stock is spread over N bucket rows and a deduction takes
    /// from one bucket with room that no one holds (`FOR UPDATE SKIP LOCKED`), so requests
    /// for one hot SKU stop queueing on one row lock. When no bucket fits (fragmented or
    /// empty), a consistent path locks the SKU and all its buckets, deducts from the total
    /// and re-spreads it, so the SKU still sells out exactly. The ledger's `stock_after`
    /// (and the receipt's `remaining`) is the SKU total as seen by the deducting
    /// statement's snapshot: exact when no other deduction of the SKU is in flight, an
    /// upper estimate otherwise. Not on SQLite (one writer at a time: nothing to spread).
    Sharded,
}

impl Strategy {
    /// Every strategy, in a stable order (used by the conformance suite and the harness).
    pub const ALL: [Strategy; 6] = [
        Strategy::Pessimistic,
        Strategy::NoWait,
        Strategy::Optimistic,
        Strategy::Guarded,
        Strategy::Coalesced,
        Strategy::Sharded,
    ];

    /// The stable snake_case name used in URLs, metrics and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Pessimistic => "pessimistic",
            Strategy::NoWait => "no_wait",
            Strategy::Optimistic => "optimistic",
            Strategy::Guarded => "guarded",
            Strategy::Coalesced => "coalesced",
            Strategy::Sharded => "sharded",
        }
    }

    /// True when every ledger row's `stock_after` is exact, so a SKU's ledger reads as a
    /// serial history. `Sharded` rows carry a snapshot estimate (see [`Strategy::Sharded`]).
    pub fn exact_stock_after(self) -> bool {
        self != Strategy::Sharded
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Strategy {
    type Err = InvalidInput;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Strategy::ALL
            .into_iter()
            .find(|strategy| strategy.as_str() == s)
            .ok_or_else(|| InvalidInput::UnknownStrategy { given: s.to_owned() })
    }
}
