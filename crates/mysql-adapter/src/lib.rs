//! MySQL 8 / MariaDB adapter for stockguard: the SQL, the row mapping and the error-number
//! mapping behind the engine's primitives ([`stockguard_core::Backend`]). The flow of every
//! change lives in `stockguard-core`'s engine; [`MySqlStore`] is that engine over
//! [`MySqlBackend`]. See `docs/mysql.md` for how it differs from the PostgreSQL adapter and why.
//!
//! | strategy | statements |
//! |---|---|
//! | `Pessimistic` | `BEGIN; SELECT stock … FOR UPDATE; UPDATE … SET stock = <read − q>; INSERT ledger; COMMIT` |
//! | `NoWait` | as `Pessimistic` with `FOR UPDATE NOWAIT` (1205 on MariaDB, 3572 on MySQL → `LockTimeout` at once) |
//! | `Optimistic` | `SELECT stock, version` (autocommit); `BEGIN; UPDATE … WHERE version = ?` (0 rows → retry)`; INSERT ledger; COMMIT` |
//! | `Guarded` | `BEGIN; UPDATE … SET stock = stock − q WHERE stock >= q` (0 rows → explain)`; SELECT stock; INSERT ledger; COMMIT` |
//! | `Coalesced` | per batch: `BEGIN; SELECT … FOR UPDATE; UPDATE; INSERT … VALUES (…), (…)` (`RETURNING id, key` on MariaDB; a read-back by key on MySQL)`; COMMIT` |
//! | `Sharded` | `BEGIN; SELECT stock, sharded, <bucket total>` (no lock); unsharded: `SELECT … FOR UPDATE SKIP LOCKED` on the row and, if free, take from it; sharded: `SELECT bucket … FOR UPDATE SKIP LOCKED` (else wait for one random bucket with room), `UPDATE` it; `INSERT ledger; COMMIT`. If no bucket has room: `BEGIN;` lock every bucket then the row `FOR UPDATE`, deduct from the total, re-spread it; `COMMIT` |
//!
//! Every ledger row carries a key (the client's or a generated one); a repeated key fails the
//! insert with 1062 on the key's index, which the engine answers from the stored row.

mod audit;
mod backend;
mod config;
mod deductions;
mod error;
mod galera;
mod holds;
mod order_batch;
mod orders;
mod probe;
mod sharded;
mod sql;

pub use backend::MySqlBackend;
pub use config::{MySqlConfig, ServerFlavor};
pub use error::classify;
use stockguard_core::Engine;

/// The embedded migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A stockguard store on MySQL 8 or MariaDB: the engine over [`MySqlBackend`]. Cheap to clone.
pub type MySqlStore = Engine<MySqlBackend>;
