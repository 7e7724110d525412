//! The `redis_lock` cases' database side (benches/src/redis_lock.rs): the seed's unguarded
//! read-modify-write, and a fence table that accepts a write only from the newest token.
//!
//! The fence is advanced by the holder *before* it reads (`register`), and checked in the
//! write's transaction (`write`). Checking only at write time, against the newest token
//! *written*, would not do: a paused holder's write could land first, and the next holder's
//! write (from a read taken before it) would still be accepted, losing an update. Registering
//! first makes every older holder's later write fail, and makes the newer holder's read come
//! after any older write that got in.

use sqlx::{MySqlPool, PgPool, SqlitePool};

use crate::db::RawPool;

/// One statement per database kind: PostgreSQL's placeholders, then MySQL's and SQLite's.
struct Sql {
    postgres: &'static str,
    question: &'static str,
}

const CREATE: &str = "CREATE TABLE IF NOT EXISTS redis_lock_fence (sku VARCHAR(64) PRIMARY KEY, token BIGINT NOT NULL, writes BIGINT NOT NULL)";
const INSERT: Sql = Sql {
    postgres: "INSERT INTO redis_lock_fence (sku, token, writes) VALUES ($1, 0, 0)",
    question: "INSERT INTO redis_lock_fence (sku, token, writes) VALUES (?, 0, 0)",
};
/// Advances the fence to the caller's token; no row when a newer one is there.
const REGISTER: Sql = Sql {
    postgres: "UPDATE redis_lock_fence SET token = $2 WHERE sku = $1 AND token < $2",
    question: "UPDATE redis_lock_fence SET token = ? WHERE sku = ? AND token < ?",
};
/// Inside the write's transaction: the fence still names the caller's token (the row lock,
/// or SQLite's write lock, holds it there until commit). `writes` always changes, so MySQL
/// counts the row as affected.
const CHECK: Sql = Sql {
    postgres: "UPDATE redis_lock_fence SET writes = writes + 1 WHERE sku = $1 AND token = $2",
    question: "UPDATE redis_lock_fence SET writes = writes + 1 WHERE sku = ? AND token = ?",
};
const READ: Sql = Sql {
    postgres: "SELECT stock FROM inventory WHERE sku = $1",
    question: "SELECT stock FROM inventory WHERE sku = ?",
};
/// The unguarded write: stock := what was read − units, whatever the row holds now.
const WRITE: Sql = Sql {
    postgres: "UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1",
    question: "UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?",
};
const LEDGER: Sql = Sql {
    postgres: "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
               VALUES ($1, $2, $3, 'deduct', NULL)",
    question: "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
               VALUES (?, ?, ?, 'deduct', NULL)",
};

/// Runs `$body` with `$tx` a transaction on whichever pool, and `$sql` picking the statement
/// text for it (SQLite's transaction takes the write lock at once).
macro_rules! in_transaction {
    ($pool:expr, |$tx:ident, $sql:ident| $body:block) => {
        match $pool {
            RawPool::Postgres(pool) => {
                let $sql = |s: &Sql| s.postgres;
                let mut $tx = PgPool::begin(pool).await?;
                $body
            }
            RawPool::MySql(pool) => {
                let $sql = |s: &Sql| s.question;
                let mut $tx = MySqlPool::begin(pool).await?;
                $body
            }
            RawPool::Sqlite(pool) => {
                let $sql = |s: &Sql| s.question;
                let mut $tx = SqlitePool::begin_with(pool, "BEGIN IMMEDIATE").await?;
                $body
            }
        }
    };
}

impl RawPool {
    /// Creates the fence table and the SKU's fence at token 0.
    pub async fn create_fence(&self, sku: &str) -> Result<(), sqlx::Error> {
        in_transaction!(self, |tx, sql| {
            sqlx::query(CREATE).execute(&mut *tx).await?;
            sqlx::query(sql(&INSERT)).bind(sku).execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    /// Advances the SKU's fence to `token`; false when a newer token is already there.
    pub async fn register_fence(&self, sku: &str, token: i64) -> Result<bool, sqlx::Error> {
        in_transaction!(self, |tx, sql| {
            let query = sqlx::query(sql(&REGISTER));
            let query = match self {
                RawPool::Postgres(_) => query.bind(sku).bind(token),
                _ => query.bind(token).bind(sku).bind(token),
            };
            let moved = query.execute(&mut *tx).await?.rows_affected() == 1;
            tx.commit().await?;
            Ok(moved)
        })
    }

    /// The SKU's stock, read without any lock.
    pub async fn read_stock_unlocked(&self, sku: &str) -> Result<i64, sqlx::Error> {
        in_transaction!(self, |tx, sql| {
            let stock: i64 = sqlx::query_scalar(sql(&READ))
                .bind(sku)
                .fetch_one(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(stock)
        })
    }

    /// The unguarded write of `read − units` and its ledger row; with `fence`, only while the
    /// fence still holds that token (false, and nothing written, when it does not).
    pub async fn write_unguarded(
        &self,
        sku: &str,
        read: i64,
        units: i64,
        fence: Option<i64>,
    ) -> Result<bool, sqlx::Error> {
        in_transaction!(self, |tx, sql| {
            if let Some(token) = fence {
                let held = sqlx::query(sql(&CHECK))
                    .bind(sku)
                    .bind(token)
                    .execute(&mut *tx)
                    .await?;
                if held.rows_affected() != 1 {
                    tx.rollback().await?;
                    return Ok(false);
                }
            }
            let write = sqlx::query(sql(&WRITE));
            let write = match self {
                RawPool::Postgres(_) => write.bind(sku).bind(read - units),
                _ => write.bind(read - units).bind(sku),
            };
            write.execute(&mut *tx).await?;
            sqlx::query(sql(&LEDGER))
                .bind(sku)
                .bind(-units)
                .bind(read - units)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(true)
        })
    }
}
