//! The raw SQL paths, which bypass every library layer: two baselines that show what the
//! library costs, and the negative control that shows the audit catches a lost update.
//! One file per database holds its statements and its error codes.

mod fence;
mod mysql;
mod postgres;
mod sqlite;

use std::time::Duration;

use serde::Serialize;
use stockguard_core::IdempotencyKey;

use crate::db::RawPool;
use crate::tally::Outcome;

/// The raw SQL paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RawOp {
    /// The guarded single statement the library's `Guarded` runs (`UPDATE … WHERE stock >=
    /// q` and the ledger insert), on a bare pool: no retry loop, no error mapping, no receipt.
    Guarded,
    /// The seed article's pessimistic flow on a bare pool: `BEGIN; SELECT … FOR UPDATE`,
    /// check, `UPDATE`, ledger insert, `COMMIT`.
    Pessimistic,
    /// NEGATIVE CONTROL: the seed article's unsafe read-check-write with no lock. It reads
    /// the stock, checks it, and writes `read − q` in a separate statement, so two
    /// concurrent requests can both pass the check and one update is lost: the shop sells
    /// more than it had. Kept only here, to prove that the audit catches the race.
    UnsafeNoLock,
}

impl RawOp {
    /// Every raw path: the baselines, then the negative control.
    pub const ALL: [RawOp; 3] = [RawOp::Guarded, RawOp::Pessimistic, RawOp::UnsafeNoLock];

    /// The name in flags and reports; prefixed so no raw path shares a library strategy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            RawOp::Guarded => "raw_guarded",
            RawOp::Pessimistic => "raw_pessimistic",
            RawOp::UnsafeNoLock => "unsafe_no_lock",
        }
    }
}

impl RawPool {
    /// Runs one raw deduction and reports its outcome, keyed as the library keys it: the
    /// ledger row carries the client's key, or one made here when the client sent none (the
    /// library makes one too). A retry of a committed key is answered from the stored row: when
    /// the key's unique index refuses the new row (the deduction rolled back), and before a
    /// refusal, since a sold-out SKU refuses before the row is ever written. The library looks
    /// a client's key up before refusing too.
    pub async fn raw_deduct(&self, op: RawOp, sku: &str, units: i64, client_key: Option<&str>) -> Outcome {
        let generated;
        let key = match client_key {
            Some(key) => key,
            None => {
                generated = IdempotencyKey::generate();
                generated.as_str()
            }
        };
        let result = match self {
            RawPool::Postgres(pool) => postgres::deduct(pool, op, sku, units, key).await,
            RawPool::MySql(pool) => mysql::deduct(pool, op, sku, units, key).await,
            RawPool::Sqlite(pool) => sqlite::deduct(pool, op, sku, units, key).await,
        };
        let key_taken = match &result {
            Err(sqlx::Error::Database(db)) => match self {
                RawPool::Postgres(_) => postgres::key_taken(db.as_ref()),
                RawPool::MySql(_) => mysql::key_taken(db.as_ref()),
                RawPool::Sqlite(_) => sqlite::key_taken(db.as_ref()),
            },
            _ => false,
        };
        if key_taken || (client_key.is_some() && matches!(result, Ok(Outcome::Refused))) {
            return self.replay(key, units).await;
        }
        result.unwrap_or_else(|error| {
            let kind = match &error {
                sqlx::Error::Database(db) => match self {
                    RawPool::Postgres(_) => postgres::error_kind(db.as_ref()),
                    RawPool::MySql(_) => mysql::error_kind(db.as_ref()),
                    RawPool::Sqlite(_) => sqlite::error_kind(db.as_ref()),
                },
                sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => "unavailable",
                _ => "internal",
            };
            Outcome::Error { kind, attempts: 1 }
        })
    }
}

impl RawPool {
    /// A deduction whose key may have been committed before: answered from the stored row,
    /// which must be the same deduction (a key reused for another one is a harness bug), or
    /// refused when no row holds the key.
    async fn replay(&self, key: &str, units: i64) -> Outcome {
        let stored = match self {
            RawPool::Postgres(pool) => postgres::stored_delta(pool, key).await,
            RawPool::MySql(pool) => mysql::stored_delta(pool, key).await,
            RawPool::Sqlite(pool) => sqlite::stored_delta(pool, key).await,
        };
        match stored {
            Ok(Some(delta)) if delta == -units => Outcome::Replayed,
            Ok(None) => Outcome::Refused,
            Ok(Some(_)) => Outcome::Error {
                kind: "internal",
                attempts: 1,
            },
            Err(_) => Outcome::Error {
                kind: "unavailable",
                attempts: 1,
            },
        }
    }
}

/// A raw deduction that committed after waiting `lock_wait` for the row (or the database's
/// write lock). Raw paths never retry.
fn success(lock_wait: Duration) -> Outcome {
    Outcome::Success {
        attempts: 1,
        lock_wait_us: u64::try_from(lock_wait.as_micros()).unwrap_or(u64::MAX),
    }
}
