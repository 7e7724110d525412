//! The raw paths on MySQL and MariaDB.

use std::time::Instant;

use sqlx::error::DatabaseError;
use sqlx::mysql::{MySqlDatabaseError, MySqlPool};

use super::{RawOp, success};
use crate::tally::Outcome;

/// The library's `Guarded` conditional update. Neither MariaDB nor MySQL has `UPDATE …
/// RETURNING`, so the new stock is read back inside the transaction, as the adapter does.
const GUARDED_UPDATE: &str =
    "UPDATE inventory SET stock = stock - ?, version = version + 1 WHERE sku = ? AND stock >= ?";
/// The pessimistic read: waits for the row lock.
const READ_STOCK_FOR_UPDATE: &str = "SELECT stock FROM inventory WHERE sku = ? FOR UPDATE";
/// A read without a lock: the guarded path's read-back, and the negative control's race window.
const READ_STOCK: &str = "SELECT stock FROM inventory WHERE sku = ?";
/// The write of the read-check-write flows: stock := read − units.
const WRITE_STOCK: &str = "UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?";
/// A deduction's ledger row.
const INSERT_LEDGER: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                             VALUES (?, ?, ?, 'deduct', ?)";
/// A replay's read: the delta stored under the key.
const STORED_DELTA: &str = "SELECT delta FROM inventory_ledger WHERE idempotency_key = ?";

// Server error numbers. MySQL reports several of these under one SQLSTATE (a lock wait
// timeout is `HY000`, a CHECK violation `23000` like a duplicate key), so the number decides.
/// `ER_DUP_ENTRY`: the key's unique index refused the ledger row.
const ER_DUP_ENTRY: u16 = 1062;
/// `ER_LOCK_DEADLOCK`.
const ER_LOCK_DEADLOCK: u16 = 1213;
/// `ER_LOCK_WAIT_TIMEOUT`.
const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
/// `ER_LOCK_NOWAIT` (`FOR UPDATE NOWAIT` found the row locked).
const ER_LOCK_NOWAIT: u16 = 3572;
/// `ER_CONSTRAINT_FAILED`: MariaDB's CHECK violation.
const ER_CONSTRAINT_FAILED_MARIADB: u16 = 4025;
/// `ER_CHECK_CONSTRAINT_VIOLATED`: MySQL's CHECK violation.
const ER_CHECK_CONSTRAINT_VIOLATED_MYSQL: u16 = 3819;

type Tx = sqlx::Transaction<'static, sqlx::MySql>;

pub(super) async fn deduct(
    pool: &MySqlPool,
    op: RawOp,
    sku: &str,
    units: i64,
    key: &str,
) -> Result<Outcome, sqlx::Error> {
    let row = LedgerRow { sku, units, key };
    match op {
        RawOp::Guarded => {
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            let updated = sqlx::query(GUARDED_UPDATE)
                .bind(units)
                .bind(sku)
                .bind(units)
                .execute(&mut *tx)
                .await?;
            let waited = started.elapsed();
            if updated.rows_affected() == 0 {
                return refuse(tx).await;
            }
            let stock_after: i64 = sqlx::query_scalar(READ_STOCK)
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            log_and_commit(tx, &row, stock_after, waited).await
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
                return refuse(tx).await;
            }
            write_stock(&mut tx, sku, stock - units).await?;
            log_and_commit(tx, &row, stock - units, waited).await
        }
        RawOp::UnsafeNoLock => {
            // The race window: nothing stops another request between this read and the write.
            let stock: i64 = sqlx::query_scalar(READ_STOCK).bind(sku).fetch_one(pool).await?;
            if stock < units {
                return Ok(Outcome::Refused);
            }
            let mut tx = pool.begin().await?;
            let started = Instant::now();
            write_stock(&mut tx, sku, stock - units).await?;
            // Its wait is the UPDATE's row-lock wait.
            let waited = started.elapsed();
            log_and_commit(tx, &row, stock - units, waited).await
        }
    }
}

async fn write_stock(tx: &mut Tx, sku: &str, stock: i64) -> Result<(), sqlx::Error> {
    sqlx::query(WRITE_STOCK)
        .bind(stock)
        .bind(sku)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// What one deduction writes to the ledger, besides the stock after it.
struct LedgerRow<'a> {
    sku: &'a str,
    units: i64,
    key: &'a str,
}

async fn log_and_commit(
    mut tx: Tx,
    row: &LedgerRow<'_>,
    stock_after: i64,
    waited: std::time::Duration,
) -> Result<Outcome, sqlx::Error> {
    sqlx::query(INSERT_LEDGER)
        .bind(row.sku)
        .bind(-row.units)
        .bind(stock_after)
        .bind(row.key)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(success(waited))
}

async fn refuse(tx: Tx) -> Result<Outcome, sqlx::Error> {
    tx.rollback().await?;
    Ok(Outcome::Refused)
}

/// The delta stored under `key`, if a row holds it.
pub(super) async fn stored_delta(pool: &MySqlPool, key: &str) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(STORED_DELTA)
        .bind(key)
        .fetch_optional(pool)
        .await
}

/// True when the key's unique index refused the ledger row.
pub(super) fn key_taken(error: &dyn DatabaseError) -> bool {
    error
        .try_downcast_ref::<MySqlDatabaseError>()
        .is_some_and(|error| error.number() == ER_DUP_ENTRY)
}

/// The outcome kind of a MySQL/MariaDB error, by server error number.
pub(super) fn error_kind(error: &dyn DatabaseError) -> &'static str {
    match error
        .try_downcast_ref::<MySqlDatabaseError>()
        .map(MySqlDatabaseError::number)
    {
        Some(ER_LOCK_DEADLOCK) => "deadlock",
        Some(ER_LOCK_WAIT_TIMEOUT | ER_LOCK_NOWAIT) => "lock_timeout",
        Some(ER_CONSTRAINT_FAILED_MARIADB | ER_CHECK_CONSTRAINT_VIOLATED_MYSQL) => "check_violation",
        _ => "internal",
    }
}
