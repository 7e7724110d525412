//! Embedded SQLite adapter for stockguard: one database file, WAL journal, no server. It owns
//! the SQL and maps SQLite result codes behind the engine's primitives
//! ([`stockguard_core::Backend`]); [`SqliteStore`] is the engine over [`SqliteBackend`].
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN IMMEDIATE` (waits up to `busy_timeout`); `SELECT stock`; check; `UPDATE … SET stock = <read − q>`; ledger `INSERT`; `COMMIT` |
//! | `NoWait` | as `Pessimistic`, on a second pool whose busy timeout is 0 (`SQLITE_BUSY` → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version` (autocommit); then `BEGIN IMMEDIATE; UPDATE … WHERE version = ?`; ledger `INSERT`; `COMMIT`; retried on a miss |
//! | `Guarded` | `BEGIN IMMEDIATE; UPDATE … SET stock = stock − q WHERE stock >= q RETURNING stock`; ledger `INSERT`; `COMMIT` |
//! | `Coalesced` | per batch: `BEGIN IMMEDIATE; SELECT stock;` one `UPDATE`; multi-row ledger `INSERT … RETURNING`; `COMMIT` |
//!
//! Not `Sharded`: SQLite admits one writer at a time, so spreading a SKU over bucket rows
//! cannot let two deductions proceed at once. See `docs/sqlite.md` for the reasoning,
//! durability settings and limits.

mod audit;
mod backend;
mod checkout;
mod config;
mod error;
mod sql;

pub use backend::SqliteBackend;
pub use config::SqliteConfig;
pub use error::classify;
use stockguard_core::Engine;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stockguard store on an embedded SQLite file: the engine over [`SqliteBackend`].
pub type SqliteStore = Engine<SqliteBackend>;
