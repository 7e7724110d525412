//! PostgreSQL adapter for stockguard: the SQL, the row mapping and the SQLSTATE mapping behind
//! the engine's primitives ([`stockguard_core::Backend`]). The flow of every change lives in
//! `stockguard-core`'s engine; [`PgStore`] is that engine over [`PgBackend`].
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN; SELECT stock … FOR NO KEY UPDATE;` one CTE: `UPDATE … SET stock = <read − q>` + ledger insert`; COMMIT` |
//! | `NoWait` | as `Pessimistic` with `FOR NO KEY UPDATE NOWAIT` (55P03 → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version`; then one CTE: `UPDATE … WHERE version = $v` + ledger insert; retried on a miss |
//! | `Guarded` | one CTE: `UPDATE … SET stock = stock − q WHERE stock >= q` + ledger insert (one round trip, keyed or not) |
//! | `Coalesced` | per batch, first one autocommit CTE that applies it whole if the row covers it: `UPDATE … WHERE stock >= total AND NOT sharded` + `INSERT … SELECT FROM UNNEST(…)`; otherwise `BEGIN; SELECT … FOR NO KEY UPDATE;` one CTE: `UPDATE` + `INSERT … SELECT FROM UNNEST(…)`; `COMMIT`. A batch of one runs the `Guarded` statement. |
//! | `Sharded` | one CTE: take from a free bucket with room (`FOR UPDATE SKIP LOCKED`), or from the free row of an unsharded SKU, and insert the ledger row; else wait for one random bucket with room; else `BEGIN;` lock the SKU row (`FOR NO KEY UPDATE`) and every bucket, deduct from the total, re-spread it; `COMMIT` |
//!
//! Every ledger row carries a key (the client's or a generated one); a repeated key fails the
//! insert with 23505, which the engine answers from the stored row. The statements are in
//! [`sql`](crate::sql), the error mapping in `error.rs`.

mod audit;
mod backend;
mod batch;
mod checkout;
mod config;
mod error;
mod order_batch;
mod probe;
mod sql;

pub use backend::PgBackend;
pub use config::PgConfig;
pub use error::classify;
use stockguard_core::Engine;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stockguard store on PostgreSQL: the engine over [`PgBackend`]. Cheap to clone.
pub type PgStore = Engine<PgBackend>;
