//! What stockguard's three SQL adapters share: sqlx plumbing that is the same on every
//! database but for its statement text. Each function takes the adapter's own SQL; this crate
//! holds none, and no flow (that is the engine's, in `stockguard-core`).
//!
//! The statements follow one convention, so that one function serves every adapter: their
//! parameters come in the order documented on each function, and their columns in the order
//! of core's `Stored*` row types.

mod checkpoints;
pub mod probe;

use std::sync::Arc;
use std::time::Instant;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Encode, Executor, FromRow, IntoArguments, Pool, QueryBuilder, Type};
use stockguard_core::engine::{
    Backend, Fault, FaultKind, LockWait, LockedRow, MissFacts, PlannedLine, PoolWaitStats, StoredHold,
    StoredHoldRow, StoredMissFacts, StoredOrder, Written,
};
use stockguard_core::{
    DeductError, HoldCheck, HoldId, IdempotencyKey, LedgerEntry, LedgerPage, OrderCheck, OrderId, PoolStatus,
    SkuId, SkuSnapshot, StockLevel, StoredHoldRows, StoredLedgerRow, StoredOrderCheckRow,
    StoredReservedMismatch, StoredSnapshotRow,
};

pub use checkpoints::{checkpointed, checkpointed_snapshots, save_checkpoints};

/// A stored row the adapter read back but core refused (a SKU id or reason that cannot be).
pub fn corrupt(error: DeductError) -> Fault {
    Fault::new(FaultKind::Other, "reading a stored row", error)
}

/// Ledger entries from stored rows, each re-checked.
pub fn entries(rows: Vec<StoredLedgerRow>) -> Result<Vec<LedgerEntry>, Fault> {
    rows.into_iter()
        .map(|row| LedgerEntry::from_stored(row).map_err(corrupt))
        .collect()
}

/// A pool whose every acquire is timed into a [`PoolWaitStats`].
///
/// It is deliberately not an `Executor`: a statement run on `&pool` would acquire inside
/// sqlx, untimed. Autocommit statements take a connection with [`TimedPool::acquire`] and
/// run on it instead (the same round trips), transactions with [`Tx::begin`].
#[derive(Debug)]
pub struct TimedPool<DB: Database> {
    pool: Pool<DB>,
    wait: Arc<PoolWaitStats>,
}

impl<DB: Database> TimedPool<DB> {
    /// Times `pool`'s acquires into a histogram of its own.
    pub fn new(pool: Pool<DB>) -> Self {
        Self {
            pool,
            wait: Arc::default(),
        }
    }

    /// Times `pool`'s acquires into `other`'s histogram: one figure for a store with two pools.
    pub fn sharing_wait_with(pool: Pool<DB>, other: &Self) -> Self {
        Self {
            pool,
            wait: Arc::clone(&other.wait),
        }
    }

    /// A pooled connection; the wait is recorded however it ends, a connection, an error
    /// (a pool timeout is the wait that matters most) or a caller that gave up.
    pub async fn acquire(&self) -> Result<PoolConnection<DB>, sqlx::Error> {
        let _timer = WaitTimer {
            started: Instant::now(),
            wait: &self.wait,
        };
        self.pool.acquire().await
    }

    /// The waits recorded so far.
    pub fn wait(&self) -> &PoolWaitStats {
        &self.wait
    }

    /// The pool itself, for migrations, occupancy and tests (statements run on it are not timed).
    pub fn inner(&self) -> &Pool<DB> {
        &self.pool
    }

    /// Occupancy, against the configured maximum.
    pub fn status(&self, max_size: u32) -> PoolStatus {
        PoolStatus {
            size: self.pool.size(),
            idle: u32::try_from(self.pool.num_idle()).unwrap_or(u32::MAX),
            max_size,
        }
    }

    /// Connections open now.
    pub fn size(&self) -> u32 {
        self.pool.size()
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Records the time since `started` when dropped, so a cancelled acquire counts too.
struct WaitTimer<'a> {
    started: Instant,
    wait: &'a PoolWaitStats,
}

impl Drop for WaitTimer<'_> {
    fn drop(&mut self) {
        self.wait.observe(self.started.elapsed());
    }
}

/// `sql` with no parameters, for its side effect on the connection (or its error).
pub async fn execute<'c, DB, E>(executor: E, sql: &'static str) -> Result<(), sqlx::Error>
where
    DB: Database,
    E: Executor<'c, Database = DB>,
{
    executor.execute(sql).await.map(|_| ())
}

/// A SKU's stock: `sql` takes the SKU and returns `(stock, initial_stock, version)`.
pub async fn stock<'c, DB, E>(
    executor: E,
    sql: &'static str,
    sku: &SkuId,
) -> Result<Option<StockLevel>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    (i64, i64, i64, i64): for<'r> FromRow<'r, DB::Row>,
{
    let row: Option<(i64, i64, i64, i64)> = sqlx::query_as(sql)
        .bind(sku.as_str())
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|(stock, initial_stock, version, reserved)| StockLevel {
        sku: sku.clone(),
        stock,
        reserved,
        initial_stock,
        version,
    }))
}

/// A page of a SKU's ledger: `sql` takes the SKU, the id to start after and the page size,
/// and returns `StoredLedgerRow`s.
pub async fn ledger_page<'c, DB, E>(
    executor: E,
    sql: &'static str,
    sku: &SkuId,
    page: LedgerPage,
) -> Result<Vec<StoredLedgerRow>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> i64: Encode<'q, DB> + Type<DB>,
    StoredLedgerRow: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as(sql)
        .bind(sku.as_str())
        .bind(page.after_id.unwrap_or(0))
        .bind(i64::from(page.limit))
        .fetch_all(executor)
        .await
}

/// The audit's per-SKU figures: `sql` returns `StoredSnapshotRow`s.
pub async fn snapshot<'c, DB, E>(
    executor: E,
    sql: &'static str,
) -> Result<Vec<StoredSnapshotRow>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    StoredSnapshotRow: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as(sql).fetch_all(executor).await
}

/// Snapshots from stored rows, each SKU id re-checked.
pub fn snapshots(rows: Vec<StoredSnapshotRow>) -> Result<Vec<SkuSnapshot>, Fault> {
    SkuSnapshot::from_stored_rows(rows).map_err(corrupt)
}

/// One snapshot read explaining a miss: `sql` takes the SKU and the key (or NULL) and
/// returns one `StoredMissFacts` row.
pub async fn miss_facts<'c, DB, E>(
    executor: E,
    sql: &'static str,
    sku: &SkuId,
    key: Option<&IdempotencyKey>,
) -> Result<StoredMissFacts, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    E: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    for<'q> Option<&'q str>: Encode<'q, DB> + Type<DB>,
    StoredMissFacts: for<'r> FromRow<'r, DB::Row>,
{
    sqlx::query_as(sql)
        .bind(sku.as_str())
        .bind(key.map(IdempotencyKey::as_str))
        .fetch_one(executor)
        .await
}

/// The facts from a miss-facts row.
pub fn facts(row: StoredMissFacts) -> Result<MissFacts, Fault> {
    MissFacts::from_stored(row).map_err(corrupt)
}

/// The committed ledger rows of `keys`, `chunk` keys per `IN (…)` list: `select` is the
/// statement up to and including `idempotency_key IN (`.
pub async fn find_keys<DB>(
    connection: &mut DB::Connection,
    select: &'static str,
    keys: &[&IdempotencyKey],
    chunk: usize,
) -> Result<Vec<StoredLedgerRow>, sqlx::Error>
where
    DB: Database + sqlx::database::HasStatementCache,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    StoredLedgerRow: for<'r> FromRow<'r, DB::Row>,
{
    let mut rows = Vec::new();
    for keys in keys.chunks(chunk.max(1)) {
        let mut query = QueryBuilder::<DB>::new(select);
        let mut list = query.separated(", ");
        for key in keys {
            list.push_bind(key.as_str());
        }
        query.push(")");
        // Not a prepared statement kept on the connection: PostgreSQL would switch a kept one
        // to a generic plan after five runs, and a generic plan made while the ledger was
        // small is a sequential scan that stays one as the ledger grows (seen on a fresh
        // bench database: each keyed batch's lookup scanned the whole ledger, and keyed
        // `coalesced` ran at a quarter of the unkeyed rate). Planned with its keys on every
        // run, the lookup uses the key index whatever the ledger's size was before.
        rows.extend(
            query
                .build_query_as::<StoredLedgerRow>()
                .persistent(false)
                .fetch_all(&mut *connection)
                .await?,
        );
    }
    Ok(rows)
}

/// A committed order's stored lines and ledger rows: `order_sql` takes the order id and
/// returns its lines; `lines_sql` takes the order id and returns its ledger rows
/// (`StoredLedgerRow`s). Two statements are enough: an order's rows commit with it and
/// never change. See [`stored_order`].
pub async fn find_order<DB>(
    connection: &mut DB::Connection,
    order_sql: &'static str,
    lines_sql: &'static str,
    order_id: &OrderId,
) -> Result<Option<(String, Vec<StoredLedgerRow>)>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    (String,): for<'r> FromRow<'r, DB::Row>,
    StoredLedgerRow: for<'r> FromRow<'r, DB::Row>,
{
    let lines: Option<(String,)> = sqlx::query_as(order_sql)
        .bind(order_id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    let Some((lines,)) = lines else {
        return Ok(None);
    };
    let rows = sqlx::query_as(lines_sql)
        .bind(order_id.as_str())
        .fetch_all(&mut *connection)
        .await?;
    Ok(Some((lines, rows)))
}

/// The audit's order check: `count_sql` returns the number of orders, `incomplete_sql` the
/// `StoredOrderCheckRow`s of incomplete ones. That one is a single statement, so it reads one
/// snapshot, and an order commits with all its lines: it never sees an order in flight as
/// half applied.
pub async fn order_check<DB>(
    connection: &mut DB::Connection,
    count_sql: &'static str,
    incomplete_sql: &'static str,
) -> Result<OrderCheck, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    (i64,): for<'r> FromRow<'r, DB::Row>,
    StoredOrderCheckRow: for<'r> FromRow<'r, DB::Row>,
{
    let (orders,): (i64,) = sqlx::query_as(count_sql).fetch_one(&mut *connection).await?;
    let rows = sqlx::query_as(incomplete_sql).fetch_all(&mut *connection).await?;
    Ok(OrderCheck::from_stored(orders, rows))
}

/// [`find_order`]'s rows, re-checked.
pub fn stored_order(found: Option<(String, Vec<StoredLedgerRow>)>) -> Result<Option<StoredOrder>, Fault> {
    found
        .map(|(lines, rows)| {
            Ok(StoredOrder {
                lines,
                entries: entries(rows)?,
            })
        })
        .transpose()
}

/// The holds of `rows` with their ledger rows: `entries_sql` is completed with the hold ids
/// and `) ORDER BY id` (see each adapter's `HOLD_ENTRIES`).
pub async fn holds_with_entries<DB>(
    connection: &mut DB::Connection,
    rows: Vec<StoredHoldRow>,
    entries_sql: &'static str,
) -> Result<Vec<(StoredHoldRow, Vec<StoredLedgerRow>)>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    StoredLedgerRow: for<'r> FromRow<'r, DB::Row>,
{
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = QueryBuilder::<DB>::new(entries_sql);
    let mut list = query.separated(", ");
    for row in &rows {
        list.push_bind(row.0.as_str());
    }
    query.push(") ORDER BY id");
    let mut entries: Vec<StoredLedgerRow> = query
        .build_query_as::<StoredLedgerRow>()
        .fetch_all(&mut *connection)
        .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let (mine, rest): (Vec<_>, Vec<_>) = entries
                .drain(..)
                .partition(|entry| entry.7.as_deref() == Some(row.0.as_str()));
            entries = rest;
            (row, mine)
        })
        .collect())
}

/// The hold `hold_id` read (or locked) by `hold_sql` (bind: the id), with its ledger rows.
pub async fn find_hold<DB>(
    connection: &mut DB::Connection,
    hold_sql: &'static str,
    entries_sql: &'static str,
    hold_id: &HoldId,
) -> Result<Option<(StoredHoldRow, Vec<StoredLedgerRow>)>, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> &'q str: Encode<'q, DB> + Type<DB>,
    StoredHoldRow: for<'r> FromRow<'r, DB::Row>,
    StoredLedgerRow: for<'r> FromRow<'r, DB::Row>,
{
    let row: Option<StoredHoldRow> = sqlx::query_as(hold_sql)
        .bind(hold_id.as_str())
        .fetch_optional(&mut *connection)
        .await?;
    let found = holds_with_entries::<DB>(connection, row.into_iter().collect(), entries_sql).await?;
    Ok(found.into_iter().next())
}

/// Holds from stored rows, each re-checked.
pub fn stored_holds(
    found: impl IntoIterator<Item = (StoredHoldRow, Vec<StoredLedgerRow>)>,
) -> Result<Vec<StoredHold>, Fault> {
    found
        .into_iter()
        .map(|(row, rows)| StoredHold::from_stored(row, entries(rows)?).map_err(corrupt))
        .collect()
}

/// The audit's hold check: every hold's rows summed (`holds_sql`) and the SKUs whose
/// `reserved` is off (`reserved_sql`).
pub async fn hold_check<DB>(
    connection: &mut DB::Connection,
    holds_sql: &'static str,
    reserved_sql: &'static str,
) -> Result<HoldCheck, sqlx::Error>
where
    DB: Database,
    DB::Arguments: IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    StoredHoldRows: for<'r> FromRow<'r, DB::Row>,
    StoredReservedMismatch: for<'r> FromRow<'r, DB::Row>,
{
    let holds = sqlx::query_as(holds_sql).fetch_all(&mut *connection).await?;
    let mismatches = sqlx::query_as(reserved_sql).fetch_all(&mut *connection).await?;
    Ok(HoldCheck::from_stored(holds, mismatches))
}

/// The ids of `keys` in `rows` (pairs of id and key, in any order), in `keys`' order; a key
/// without a row is left out, which the engine reports.
pub fn ids_in_key_order<'k>(
    keys: impl IntoIterator<Item = &'k IdempotencyKey>,
    rows: &[(i64, String)],
) -> Vec<i64> {
    keys.into_iter()
        .filter_map(|key| rows.iter().find(|(_, k)| k == key.as_str()).map(|(id, _)| *id))
        .collect()
}

/// A batch's locked rows in `skus` order, from what one multi-row `SELECT … FOR UPDATE`
/// returned as `sku → (stock, sharded)`: `None` for a SKU with no row. A sharded row (already
/// locked by this transaction) is read again with [`Backend::lock_row`], which adds the bucket
/// stock its `stock_after` figures need.
pub async fn rows_in_sku_order<B: Backend>(
    backend: &B,
    tx: &mut B::Tx,
    skus: &[&SkuId],
    mut by_sku: std::collections::HashMap<String, (i64, bool)>,
) -> Result<Vec<Option<LockedRow>>, Fault> {
    let mut locked = Vec::with_capacity(skus.len());
    for sku in skus {
        locked.push(match by_sku.remove(sku.as_str()) {
            None => None,
            Some((stock, false)) => Some(LockedRow {
                stock,
                bucket_offset: 0,
                sharded: false,
            }),
            Some((_, true)) => backend.lock_row(tx, sku, LockWait::Wait).await?,
        });
    }
    Ok(locked)
}

/// What each of a batch's `lines` wrote, in `lines` order, from the rows an insert returned
/// as `(id, reference, sku, stock_after)` in any order: a line's row is the one with its
/// reference and SKU (unique within one batch). A line with no row is corruption.
pub fn written_in_line_order(
    lines: &[PlannedLine<'_>],
    rows: Vec<(i64, String, String, i64)>,
) -> Result<Vec<Written>, Fault> {
    let by_line: std::collections::HashMap<(String, String), Written> = rows
        .into_iter()
        .map(|(ledger_id, reference, sku, stock_after)| {
            (
                (reference, sku),
                Written {
                    ledger_id,
                    stock_after,
                },
            )
        })
        .collect();
    lines
        .iter()
        .map(|planned| {
            by_line
                .get(&(
                    planned.line.reference.to_owned(),
                    planned.line.sku.as_str().to_owned(),
                ))
                .copied()
                .ok_or_else(|| {
                    corrupt(DeductError::Internal {
                        context: "a batch's insert returned no ledger row for one of its lines",
                        source: None,
                    })
                })
        })
        .collect()
}

/// What a sqlx error that the server did not send means: the pool, the socket, TLS. The
/// server's own errors (`sqlx::Error::Database`) are each adapter's to map, by vendor code.
/// `pool_has_room` tells a pool timeout with connections free to open (the pool kept trying to
/// reach the server) from a truly exhausted pool.
pub fn transport_fault_kind(error: &sqlx::Error, pool_has_room: bool) -> FaultKind {
    use std::io::ErrorKind;
    use stockguard_core::engine::ConnectRefusal;
    match error {
        sqlx::Error::PoolTimedOut if pool_has_room => FaultKind::ConnectRefused(ConnectRefusal::OpenTimedOut),
        sqlx::Error::PoolTimedOut => FaultKind::PoolTimedOut,
        sqlx::Error::PoolClosed => FaultKind::PoolClosed,
        sqlx::Error::Io(io) => match io.kind() {
            ErrorKind::ConnectionRefused => FaultKind::ConnectRefused(ConnectRefusal::Refused),
            ErrorKind::NotFound | ErrorKind::AddrNotAvailable | ErrorKind::HostUnreachable => {
                FaultKind::ConnectRefused(ConnectRefusal::Unreachable)
            }
            _ => FaultKind::ConnectionLost,
        },
        sqlx::Error::Tls(_) => FaultKind::ConnectRefused(ConnectRefusal::Tls),
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => FaultKind::ConnectionLost,
        _ => FaultKind::Other,
    }
}

/// A transaction on one pooled connection, safe to drop at any point: while it is open,
/// dropping it closes the connection (the server then rolls back) instead of returning it
/// to the pool.
///
/// Why not `sqlx::Transaction`: in sqlx 0.9, a `begin()` future dropped after BEGIN was sent
/// and before its answer arrived hands the connection back to the pool still inside a
/// transaction (its rollback guard acts only once the depth counter is raised, after the
/// answer). The next autocommit write on that connection is then answered as committed and
/// lost when the connection ends (found by the chaos runner). Here the guard is armed before
/// anything is sent.
pub struct Tx<DB: Database> {
    connection: PoolConnection<DB>,
    open: bool,
}

impl<DB: Database> std::fmt::Debug for Tx<DB> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("open", &self.open).finish()
    }
}

impl<DB> Tx<DB>
where
    DB: Database,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
{
    /// Takes a pooled connection and starts a transaction with `begin` (`BEGIN`, or
    /// SQLite's `BEGIN IMMEDIATE`).
    pub async fn begin(pool: &TimedPool<DB>, begin: &'static str) -> Result<Self, sqlx::Error> {
        let connection = pool.acquire().await?;
        let mut tx = Self {
            connection,
            open: true,
        };
        (&mut *tx.connection).execute(begin).await?;
        Ok(tx)
    }

    /// Commits. On an error the connection is closed when the transaction is dropped, whatever
    /// state the server left it in.
    pub async fn commit(mut self) -> Result<(), sqlx::Error> {
        (&mut *self.connection).execute("COMMIT").await?;
        self.open = false;
        Ok(())
    }

    /// Rolls back, releasing every lock before it returns.
    pub async fn rollback(mut self) -> Result<(), sqlx::Error> {
        (&mut *self.connection).execute("ROLLBACK").await?;
        self.open = false;
        Ok(())
    }
}

impl<DB: Database> Drop for Tx<DB> {
    fn drop(&mut self) {
        if self.open {
            self.connection.close_on_drop();
        }
    }
}

impl<DB: Database> std::ops::Deref for Tx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.connection
    }
}

impl<DB: Database> std::ops::DerefMut for Tx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.connection
    }
}
