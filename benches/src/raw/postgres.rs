//! The raw paths on PostgreSQL.

use std::time::Instant;

use sqlx::error::DatabaseError;
use sqlx::postgres::PgPool;

use super::{RawOp, success};
use crate::tally::Outcome;

/// The library's `Guarded` in one autocommit statement: the conditional update and its
/// ledger row. No row back means insufficient stock (every SKU exists).
const GUARDED_DEDUCT: &str = "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                                          WHERE sku = $1 AND stock >= $2 RETURNING stock) \
                              INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                              SELECT $1, -$2, u.stock, 'deduct', $3 FROM u RETURNING id";
/// The pessimistic read: waits for the row lock.
const READ_STOCK_FOR_UPDATE: &str = "SELECT stock FROM inventory WHERE sku = $1 FOR UPDATE";
/// The negative control's read: no lock, so another request can write between it and the write.
const READ_STOCK: &str = "SELECT stock FROM inventory WHERE sku = $1";
/// The write of the read-check-write flows: stock := read − units (`$2`), and its ledger row
/// (delta `$3`), in one statement.
const WRITE_STOCK_AND_LEDGER: &str = "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 \
                                                 WHERE sku = $1 RETURNING stock) \
                                      INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                                      SELECT $1, $3, u.stock, 'deduct', $4 FROM u";
/// A replay's read: the delta stored under the key.
const STORED_DELTA: &str = "SELECT delta FROM inventory_ledger WHERE idempotency_key = $1";

pub(super) async fn deduct(
    pool: &PgPool,
    op: RawOp,
    sku: &str,
    units: i64,
    key: &str,
) -> Result<Outcome, sqlx::Error> {
    match op {
        RawOp::Guarded => {
            let started = Instant::now();
            let row: Option<(i64,)> = sqlx::query_as(GUARDED_DEDUCT)
                .bind(sku)
                .bind(units)
                .bind(key)
                .fetch_optional(pool)
                .await?;
            Ok(row.map_or(Outcome::Refused, |_| success(started.elapsed())))
        }
        RawOp::Pessimistic => {
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            let stock: i64 = sqlx::query_scalar(READ_STOCK_FOR_UPDATE)
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            let waited = started.elapsed();
            if stock < units {
                tx.rollback().await?;
                return Ok(Outcome::Refused);
            }
            write_read_minus_units(&mut *tx, sku, stock, units, key).await?;
            tx.commit().await?;
            Ok(success(waited))
        }
        RawOp::UnsafeNoLock => {
            // The race window: nothing stops another request between this read and the write.
            let stock: i64 = sqlx::query_scalar(READ_STOCK).bind(sku).fetch_one(pool).await?;
            if stock < units {
                return Ok(Outcome::Refused);
            }
            let started = Instant::now();
            write_read_minus_units(pool, sku, stock, units, key).await?;
            Ok(success(started.elapsed()))
        }
    }
}

async fn write_read_minus_units<'c>(
    executor: impl sqlx::Executor<'c, Database = sqlx::Postgres>,
    sku: &str,
    stock: i64,
    units: i64,
    key: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(WRITE_STOCK_AND_LEDGER)
        .bind(sku)
        .bind(stock - units)
        .bind(-units)
        .bind(key)
        .execute(executor)
        .await?;
    Ok(())
}

/// The delta stored under `key`, if a row holds it.
pub(super) async fn stored_delta(pool: &PgPool, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(STORED_DELTA)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// True when the key's unique index refused the ledger row (`unique_violation`).
pub(super) fn key_taken(error: &dyn DatabaseError) -> bool {
    error.code().as_deref() == Some("23505")
}

/// The outcome kind of a PostgreSQL error, by SQLSTATE.
pub(super) fn error_kind(error: &dyn DatabaseError) -> &'static str {
    match error.code().as_deref() {
        Some("40P01") => "deadlock",
        Some("55P03") => "lock_timeout",
        Some("40001") => "serialization_failure",
        Some("23514") => "check_violation",
        _ => "internal",
    }
}
