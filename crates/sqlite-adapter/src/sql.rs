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

/// The database's clock, in the stored timestamp format (compared as text).
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

/// True when a due hold (active, past `expires_at`) still holds units of the SKU `?1`: a
/// refusal is final only once those are expired.
macro_rules! due_holds_of_param1 {
    () => {
        concat!(
            "EXISTS (SELECT 1 FROM inventory_hold h \
              JOIN inventory_ledger dl ON dl.reference = h.hold_id AND dl.reason = 'reserve' \
              WHERE dl.sku = ?1 AND h.state = 'active' AND h.expires_at <= ",
            now!(),
            ")"
        )
    };
}

/// Touches every table: fails with "no such table" when the schema is missing.
pub(crate) const PING: &str = "SELECT (SELECT 1 FROM inventory LIMIT 1), (SELECT 1 FROM inventory_ledger LIMIT 1), \
     (SELECT 1 FROM inventory_order LIMIT 1), (SELECT 1 FROM inventory_hold LIMIT 1)";

pub(crate) const CREATE_SKU: &str =
    "INSERT INTO inventory (sku, stock, initial_stock) VALUES (?1, ?2, ?2) ON CONFLICT (sku) DO NOTHING";

/// Available (the row and due holds' units), initial stock, version, and reserved less due
/// holds' units.
pub(crate) const STOCK: &str = concat!(
    "SELECT i.stock + d.units, i.initial_stock, i.version, i.reserved - d.units FROM inventory i, \
       (SELECT COALESCE(SUM(-l.delta), 0) AS units FROM inventory_hold h \
        JOIN inventory_ledger l ON l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = ?1 \
        WHERE h.state = 'active' AND h.expires_at <= ",
    now!(),
    ") d WHERE i.sku = ?1"
);

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

/// One snapshot: the row's stock, no bucket stock (SQLite has none), whether a due hold holds
/// units of the SKU, and key `?2`'s row.
pub(crate) const MISS_FACTS: &str = concat!(
    "SELECT (SELECT stock FROM inventory WHERE sku = ?1), 0, ",
    due_holds_of_param1!(),
    ", l.id, l.sku, l.delta, l.stock_after, l.reason, l.idempotency_key, l.created_at, l.reference, l.adjustment \
     FROM (SELECT 1) AS one LEFT JOIN inventory_ledger l ON l.idempotency_key = ?2"
);

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

/// Binds: sku, delta, stock_after, reason, reference. A line's ledger row (an order's or a
/// hold's): no key of its own.
pub(crate) const INSERT_LINE: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) \
     VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id";

/// Binds: sku, row stock, reserved delta.
pub(crate) const SET_ROW_STOCK_RESERVED: &str =
    "UPDATE inventory SET stock = ?2, reserved = reserved + ?3, version = version + 1 WHERE sku = ?1";

/// Binds: sku, stock delta, reserved delta. A line's conditional write: neither column below
/// zero.
pub(crate) const GUARDED_LINE_UPDATE: &str = "UPDATE inventory SET stock = stock + ?2, reserved = reserved + ?3, \
     version = version + 1 WHERE sku = ?1 AND stock + ?2 >= 0 AND reserved + ?3 >= 0 RETURNING stock";

/// A hold row's columns, in `StoredHoldRow` order (due: 1 or 0 on the database's clock).
macro_rules! hold_columns {
    () => {
        concat!(
            "hold_id, lines, state, expires_at, (state = 'active' AND expires_at <= ",
            now!(),
            ")"
        )
    };
}

/// Binds: hold id, canonical lines, line count, seconds to live. A taken id fails with a
/// PRIMARY KEY violation on `inventory_hold.hold_id`.
pub(crate) const CLAIM_HOLD: &str = "INSERT INTO inventory_hold (hold_id, lines, line_count, expires_at) \
     VALUES (?1, ?2, ?3, strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+' || ?4 || ' seconds')) RETURNING expires_at";
/// Binds: hold id. Under the write lock a plain read is a locked read.
pub(crate) const FIND_HOLD: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE hold_id = ?1"
);
/// Completed with the hold ids and `) ORDER BY id`.
pub(crate) const HOLD_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reason IN ('reserve', 'confirm', 'release', 'expire') AND reference IN ("
);
/// The sweeper. Binds: holds at most. One writer at a time, so nothing to skip.
pub(crate) const LOCK_DUE_ANY: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE state = 'active' AND expires_at <= ",
    now!(),
    " ORDER BY expires_at, hold_id LIMIT ?1"
);
/// A refusal's expiry. Binds: sku, holds at most.
pub(crate) const LOCK_DUE_ON: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold h WHERE state = 'active' AND expires_at <= ",
    now!(),
    " AND EXISTS (SELECT 1 FROM inventory_ledger l WHERE l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = ?1) \
     ORDER BY expires_at, hold_id LIMIT ?2"
);
/// Binds: sku.
pub(crate) const HAS_DUE_ON: &str = concat!("SELECT ", due_holds_of_param1!());
/// Binds: hold id, final state.
pub(crate) const SET_HOLD_STATE: &str = concat!(
    "UPDATE inventory_hold SET state = ?2, resolved_at = ",
    now!(),
    " WHERE hold_id = ?1"
);

/// The audit's hold check: every hold's ledger rows, summed (see `HoldRows`).
pub(crate) const HOLD_ROWS: &str = "SELECT h.hold_id, h.state, h.line_count, \
            COALESCE(SUM(l.reason = 'reserve'), 0), COALESCE(SUM(l.reason = 'confirm'), 0), \
            COALESCE(SUM(l.reason = 'release'), 0), COALESCE(SUM(l.reason = 'expire'), 0), \
            COALESCE(SUM(CASE WHEN l.reason = 'reserve' THEN -l.delta ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN l.reason IN ('release', 'expire') THEN l.delta ELSE 0 END), 0), \
            COALESCE(SUM(CASE WHEN l.reason = 'confirm' THEN l.delta ELSE 0 END), 0) \
     FROM inventory_hold h LEFT JOIN inventory_ledger l \
       ON l.reference = h.hold_id AND l.reason IN ('reserve', 'confirm', 'release', 'expire') \
     GROUP BY h.hold_id, h.state, h.line_count ORDER BY h.hold_id";
/// SKUs whose `reserved` is not their active holds' units.
pub(crate) const RESERVED_MISMATCHES: &str = "SELECT i.sku, i.reserved, COALESCE(a.held, 0) \
     FROM inventory i LEFT JOIN ( \
         SELECT l.sku, SUM(-l.delta) AS held FROM inventory_ledger l \
         JOIN inventory_hold h ON h.hold_id = l.reference AND h.state = 'active' \
         WHERE l.reason = 'reserve' GROUP BY l.sku) a ON a.sku = i.sku \
     WHERE i.reserved <> COALESCE(a.held, 0) OR i.reserved < 0 ORDER BY i.sku";

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
