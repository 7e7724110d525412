//! Every fixed statement the SQLite adapter sends. Multi-row statements are built with sqlx's
//! `QueryBuilder` where they are sent (`backend.rs`).
//!
//! SQLite has no row locks: one connection at a time may write the whole database, and
//! `BEGIN IMMEDIATE` takes that write lock up front. Every write path starts with it, so no
//! transaction ever reads and then tries to upgrade to a writer (which SQLite refuses with
//! `SQLITE_BUSY_SNAPSHOT` without waiting).

/// Starts a write transaction holding the database's write lock from its first statement.
pub(crate) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Columns of a ledger row, in `StoredLedgerRow` order.
macro_rules! ledger_columns {
    () => {
        "id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment"
    };
}

/// Completed with the keys and `)` by the lookup.
pub(crate) const FIND_KEYS: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE idempotency_key IN ("
);

/// Touches every table: fails with "no such table" when the schema is missing.
pub(crate) const PING: &str = "SELECT (SELECT 1 FROM inventory LIMIT 1), (SELECT 1 FROM inventory_ledger LIMIT 1), \
     (SELECT 1 FROM inventory_order LIMIT 1)";

pub(crate) const CREATE_SKU: &str =
    "INSERT INTO inventory (sku, stock, initial_stock) VALUES (?1, ?2, ?2) ON CONFLICT (sku) DO NOTHING";

pub(crate) const STOCK: &str = "SELECT stock, initial_stock, version FROM inventory WHERE sku = ?1";

pub(crate) const LEDGER_PAGE: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE sku = ?1 AND id > ?2 ORDER BY id LIMIT ?3"
);

/// One statement reads one WAL snapshot, so stock and ledger sums are consistent.
pub(crate) const SNAPSHOT: &str = "SELECT i.sku, i.initial_stock, i.stock, COALESCE(l.delta_sum, 0), COALESCE(l.row_count, 0) \
     FROM inventory i \
     LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count FROM inventory_ledger GROUP BY sku) l \
       ON l.sku = i.sku \
     ORDER BY i.sku";

/// One snapshot: the row's stock, no bucket stock (SQLite has none), and key `?2`'s row.
pub(crate) const MISS_FACTS: &str = "SELECT (SELECT stock FROM inventory WHERE sku = ?1), 0, \
            l.id, l.sku, l.delta, l.stock_after, l.reason, l.idempotency_key, l.created_at, l.reference, l.adjustment \
     FROM (SELECT 1) AS one LEFT JOIN inventory_ledger l ON l.idempotency_key = ?2";

/// Binds: sku, units. The database decides: the row changes only if it still holds enough.
pub(crate) const GUARDED_UPDATE: &str = "UPDATE inventory SET stock = stock - ?2, version = version + 1 \
     WHERE sku = ?1 AND stock >= ?2 RETURNING stock";

/// Binds: sku, units, STOCK_MAX.
pub(crate) const RESTOCK_UPDATE: &str = "UPDATE inventory SET stock = stock + ?2, version = version + 1 \
     WHERE sku = ?1 AND stock <= ?3 - ?2 RETURNING stock";

/// Binds: sku, delta, stock_after, reason, key.
pub(crate) const INSERT_LEDGER: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id";

pub(crate) const READ_VERSIONED: &str = "SELECT stock, version FROM inventory WHERE sku = ?1";

/// Binds: sku, row stock after, version.
pub(crate) const COMPARE_AND_SET: &str =
    "UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1 AND version = ?3";

/// Under the write lock `BEGIN IMMEDIATE` took, a plain read is a locked read.
pub(crate) const LOCK_ROW: &str = "SELECT stock FROM inventory WHERE sku = ?1";

/// Binds: sku, row stock.
pub(crate) const SET_ROW_STOCK: &str =
    "UPDATE inventory SET stock = ?2, version = version + 1 WHERE sku = ?1";

/// Binds: order id, canonical lines, line count. A taken id fails with a UNIQUE violation on
/// `inventory_order.order_id`.
pub(crate) const CLAIM_ORDER: &str =
    "INSERT INTO inventory_order (order_id, lines, line_count) VALUES (?1, ?2, ?3)";

/// Binds: order id.
pub(crate) const ORDER_LINES: &str = "SELECT lines FROM inventory_order WHERE order_id = ?1";
pub(crate) const ORDER_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reference = ?1 AND reason = 'order' ORDER BY id"
);

/// Binds: sku, delta, stock_after, order id. An order line's ledger row: no key of its own.
pub(crate) const INSERT_ORDER_LINE: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) \
     VALUES (?1, ?2, ?3, 'order', ?4) RETURNING id";

/// The audit's order check: how many orders there are, and every order whose `order` ledger
/// rows are not exactly its line count, plus `order` rows whose reference no order claimed
/// (line count 0).
pub(crate) const ORDER_COUNT: &str = "SELECT COUNT(*) FROM inventory_order";
pub(crate) const INCOMPLETE_ORDERS: &str = "SELECT o.order_id, o.line_count, COUNT(l.id) \
     FROM inventory_order o LEFT JOIN inventory_ledger l ON l.reference = o.order_id AND l.reason = 'order' \
     GROUP BY o.order_id, o.line_count HAVING COUNT(l.id) <> o.line_count \
     UNION ALL \
     SELECT l.reference, 0, COUNT(*) FROM inventory_ledger l \
     WHERE l.reason = 'order' AND NOT EXISTS (SELECT 1 FROM inventory_order o WHERE o.order_id = l.reference) \
     GROUP BY l.reference ORDER BY 1";

/// Binds: sku, delta, stock_after, key, reference, adjustment kind.
pub(crate) const INSERT_ADJUSTMENT: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key, reference, adjustment) \
     VALUES (?1, ?2, ?3, 'adjust', ?4, ?5, ?6) RETURNING id";
