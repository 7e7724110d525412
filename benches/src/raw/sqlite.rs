//! The raw paths on SQLite.

use std::time::Instant;

use sqlx::Connection;
use sqlx::error::DatabaseError;
use sqlx::sqlite::SqlitePool;

use super::{RawOp, success};
use crate::tally::Outcome;

/// Takes the write lock up front, as the adapter does, so the transaction never has to
/// upgrade a read lock (which SQLite cannot wait for).
const BEGIN_IMMEDIATE: &str = "BEGIN IMMEDIATE";
/// The library's `Guarded` conditional update.
const GUARDED_UPDATE: &str = "UPDATE inventory SET stock = stock - ?2, version = version + 1 \
                              WHERE sku = ?1 AND stock >= ?2 RETURNING stock";
/// A read; under `BEGIN IMMEDIATE` nobody else can write until commit.
const READ_STOCK: &str = "SELECT stock FROM inventory WHERE sku = ?1";
/// The write of the read-check-write flows: stock := read − units.
const WRITE_STOCK: &str = "UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1";
/// A deduction's ledger row.
const INSERT_LEDGER: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                             VALUES (?1, ?2, ?3, 'deduct', ?4)";
/// A replay's read: the delta stored under the key.
const STORED_DELTA: &str = "SELECT delta FROM inventory_ledger WHERE idempotency_key = ?1";

/// SQLite's primary result codes (the low byte of the extended code sqlx reports).
const SQLITE_BUSY: i32 = 5;
/// `SQLITE_CONSTRAINT_UNIQUE`: the key's unique index refused the ledger row.
const SQLITE_CONSTRAINT_UNIQUE: i32 = 2067;
/// `SQLITE_CONSTRAINT_CHECK`, an extended code: other constraint failures are not stock guards.
const SQLITE_CONSTRAINT_CHECK: i32 = 275;

pub(super) async fn deduct(
    pool: &SqlitePool,
    op: RawOp,
    sku: &str,
    units: i64,
    key: &str,
) -> Result<Outcome, sqlx::Error> {
    // The negative control reads before its transaction: that gap is the race it exists for.
    let unlocked_read = if op == RawOp::UnsafeNoLock {
        let stock: i64 = sqlx::query_scalar(READ_STOCK).bind(sku).fetch_one(pool).await?;
        if stock < units {
            return Ok(Outcome::Refused);
        }
        Some(stock)
    } else {
        None
    };
    let mut conn = pool.acquire().await?;
    let started = Instant::now();
    // A transaction sqlx tracks: if this future is dropped before commit, dropping `tx`
    // rolls back and releases the write lock, where a bare `BEGIN IMMEDIATE` statement would
    // go back to the pool still holding it.
    let mut tx = conn.begin_with(BEGIN_IMMEDIATE).await?;
    let waited = started.elapsed();
    let stock_after: Option<i64> = match (op, unlocked_read) {
        (RawOp::Guarded, _) => {
            sqlx::query_scalar(GUARDED_UPDATE)
                .bind(sku)
                .bind(units)
                .fetch_optional(&mut *tx)
                .await?
        }
        (RawOp::Pessimistic, _) => {
            let stock: i64 = sqlx::query_scalar(READ_STOCK)
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            (stock >= units).then_some(stock - units)
        }
        (RawOp::UnsafeNoLock, read) => read.map(|stock| stock - units),
    };
    let Some(stock_after) = stock_after else {
        tx.rollback().await?;
        return Ok(Outcome::Refused);
    };
    if op != RawOp::Guarded {
        sqlx::query(WRITE_STOCK)
            .bind(sku)
            .bind(stock_after)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query(INSERT_LEDGER)
        .bind(sku)
        .bind(-units)
        .bind(stock_after)
        .bind(key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(success(waited))
}

/// The delta stored under `key`, if a row holds it.
pub(super) async fn stored_delta(pool: &SqlitePool, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(STORED_DELTA)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// True when the key's unique index refused the ledger row.
pub(super) fn key_taken(error: &dyn DatabaseError) -> bool {
    error.code().and_then(|code| code.parse::<i32>().ok()) == Some(SQLITE_CONSTRAINT_UNIQUE)
}

/// The outcome kind of a SQLite error, by result code.
pub(super) fn error_kind(error: &dyn DatabaseError) -> &'static str {
    let code = error.code().and_then(|code| code.parse::<i32>().ok());
    match code {
        Some(SQLITE_CONSTRAINT_CHECK) => "check_violation",
        Some(code) if code & 0xff == SQLITE_BUSY => "lock_timeout",
        _ => "internal",
    }
}
