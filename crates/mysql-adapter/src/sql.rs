//! Every fixed statement the MySQL/MariaDB adapter sends. Multi-row statements are built with
//! sqlx's `QueryBuilder` where they are sent (`backend.rs`, `sharded.rs`).
//!
//! Neither server has `UPDATE … RETURNING`, so every write is an `UPDATE` whose affected-row
//! count says whether it applied, followed (in the same transaction, under the row lock the
//! `UPDATE` took) by a read-back of the new stock and a ledger `INSERT`.

/// Columns of a ledger row, in `StoredLedgerRow` order.
macro_rules! ledger_columns {
    () => {
        "id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment"
    };
}

/// Units of the SKU (`?`) held in `Sharded` buckets. SUM over BIGINT is DECIMAL in MySQL;
/// CAST … AS SIGNED brings it back to BIGINT.
macro_rules! bucket_stock_of_param {
    () => {
        "CAST(COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = ?), 0) AS SIGNED)"
    };
}

/// Units of the SKU `i.sku` that due holds (active, past `expires_at`) still hold: reads count
/// them as available at once, before the sweeper writes the expiry.
macro_rules! due_units_of_i_sku {
    () => {
        "CAST(COALESCE((SELECT SUM(-l.delta) FROM inventory_hold h \
          JOIN inventory_ledger l ON l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = i.sku \
          WHERE h.state = 'active' AND h.expires_at <= NOW(6)), 0) AS SIGNED)"
    };
}

/// 1 when a due hold (active, past `expires_at`) still holds units of the SKU `$sku`, else 0:
/// a refusal is final only once those are expired.
macro_rules! due_holds_of {
    ($sku:literal) => {
        concat!(
            "CAST(EXISTS (SELECT 1 FROM inventory_hold h \
              JOIN inventory_ledger dl ON dl.reference = h.hold_id AND dl.reason = 'reserve' \
              WHERE dl.sku = ",
            $sku,
            " AND h.state = 'active' AND h.expires_at <= NOW(6)) AS SIGNED)"
        )
    };
}

/// Touches every table: fails with 1146 when the schema is missing.
pub(crate) const PING: &str = "SELECT (SELECT 1 FROM inventory LIMIT 1), (SELECT 1 FROM inventory_ledger LIMIT 1), \
     (SELECT 1 FROM inventory_bucket LIMIT 1), (SELECT 1 FROM inventory_order LIMIT 1), \
     (SELECT 1 FROM inventory_hold LIMIT 1)";

pub(crate) const CREATE_SKU: &str = "INSERT INTO inventory (sku, stock, initial_stock) VALUES (?, ?, ?)";

/// Available (row, buckets, and due holds' units), initial stock, version, and reserved less
/// due holds' units.
pub(crate) const STOCK: &str = concat!(
    "SELECT CAST(stock + COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) + ",
    due_units_of_i_sku!(),
    " AS SIGNED), initial_stock, version, CAST(reserved - ",
    due_units_of_i_sku!(),
    " AS SIGNED) FROM inventory i WHERE i.sku = ?"
);

pub(crate) const LEDGER_PAGE: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE sku = ? AND id > ? ORDER BY id LIMIT ?"
);

pub(crate) const SNAPSHOT: &str = "SELECT i.sku, i.initial_stock, CAST(i.stock + COALESCE(b.bucket_stock, 0) AS SIGNED), \
            CAST(COALESCE(l.delta_sum, 0) AS SIGNED), CAST(COALESCE(l.row_count, 0) AS SIGNED) \
     FROM inventory i \
     LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count \
                FROM inventory_ledger GROUP BY sku) l \
       ON l.sku = i.sku \
     LEFT JOIN (SELECT sku, SUM(stock) AS bucket_stock FROM inventory_bucket GROUP BY sku) b \
       ON b.sku = i.sku \
     ORDER BY i.sku";

/// One read view: the row's stock, its bucket stock, whether a due hold holds units of the
/// SKU, and the key's ledger row if any.
/// Binds: sku, key.
pub(crate) const MISS_FACTS: &str = concat!(
    "SELECT (SELECT i.stock FROM inventory i WHERE i.sku = one.sku), \
            CAST(COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = one.sku), 0) AS SIGNED), ",
    due_holds_of!("one.sku"),
    ", l.id, l.sku, l.delta, l.stock_after, l.reason, l.idempotency_key, l.created_at, l.reference, l.adjustment \
     FROM (SELECT CONVERT(? USING utf8mb4) COLLATE utf8mb4_bin AS sku) AS one LEFT JOIN inventory_ledger l ON l.idempotency_key = ?"
);

/// Completed with the keys and `)` by the lookup.
pub(crate) const FIND_KEYS: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE idempotency_key IN ("
);

/// Resolution: share locks conflict with every writer's bucket and row locks, so taking them
/// (buckets first, the order every multi-row path uses here) waits out any transaction still
/// holding them. `LOCK IN SHARE MODE` is understood by both servers.
pub(crate) const SETTLE_BUCKETS: &str =
    "SELECT bucket FROM inventory_bucket WHERE sku = ? ORDER BY bucket LOCK IN SHARE MODE";
pub(crate) const SETTLE_ROW: &str = "SELECT sku FROM inventory WHERE sku = ? LOCK IN SHARE MODE";

/// Binds: units, sku, units. The database checks and subtracts in one statement under the
/// row lock, so the guard holds however many requests race.
pub(crate) const GUARDED_UPDATE: &str =
    "UPDATE inventory SET stock = stock - ?, version = version + 1 WHERE sku = ? AND stock >= ?";

/// Binds: units, sku, sku, STOCK_MAX, units. The SKU's total (row plus buckets) stays within
/// STOCK_MAX, not just the row.
pub(crate) const RESTOCK_UPDATE: &str = concat!(
    "UPDATE inventory SET stock = stock + ?, version = version + 1 WHERE sku = ? AND stock + ",
    bucket_stock_of_param!(),
    " <= ? - ?"
);

/// The row's stock after this transaction's own write, and whether buckets count too.
pub(crate) const READ_BACK: &str = "SELECT stock, sharded FROM inventory WHERE sku = ?";

pub(crate) const BUCKET_STOCK: &str =
    "SELECT CAST(COALESCE(SUM(stock), 0) AS SIGNED) FROM inventory_bucket WHERE sku = ?";

pub(crate) const INSERT_LEDGER: &str =
    "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) VALUES (?, ?, ?, ?, ?)";

pub(crate) const READ_VERSIONED: &str = "SELECT stock, version, sharded FROM inventory WHERE sku = ?";

/// Binds: row stock after, sku, version.
pub(crate) const COMPARE_AND_SET: &str =
    "UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ? AND version = ?";

pub(crate) const LOCK_ROW: &str = "SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE";
/// Galera only, autocommit only: makes this node apply every write the cluster committed
/// before it (a causal wait for this one statement; the session's `wsrep_sync_wait` stays 0).
pub(crate) const WAIT_FOR_CLUSTER: &str =
    "SET STATEMENT wsrep_sync_wait = 1 FOR SELECT id FROM stockguard_probe WHERE id = 1";
pub(crate) const LOCK_ROW_NOWAIT: &str =
    "SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE NOWAIT";

/// Binds: row stock, sku.
pub(crate) const SET_ROW_STOCK: &str = "UPDATE inventory SET stock = ?, version = version + 1 WHERE sku = ?";

/// `Sharded`: a plain read (no lock) says whether the SKU is spread, and gives the snapshot
/// total that a bucket deduction reports as its estimate. Binds: sku.
pub(crate) const SHARD_STATE: &str = "SELECT stock, sharded, \
            CAST(COALESCE((SELECT SUM(b.stock) FROM inventory_bucket b WHERE b.sku = i.sku), 0) AS SIGNED) \
     FROM inventory i WHERE i.sku = ?";

/// An unsharded SKU's row, if no one holds it. A busy row is the signal to spread the SKU.
pub(crate) const FREE_ROW: &str = "SELECT stock, sharded FROM inventory WHERE sku = ? FOR UPDATE SKIP LOCKED";

/// A free bucket with room, scanning from a random bucket and wrapping around. Each scan
/// walks the primary key in order and stops at the first match, so it locks only the bucket
/// it returns (READ COMMITTED releases rows that fail the condition). Binds: sku, start, units.
pub(crate) const FREE_BUCKET_FROM: &str = "SELECT bucket FROM inventory_bucket WHERE sku = ? AND bucket >= ? AND stock >= ? \
     ORDER BY bucket LIMIT 1 FOR UPDATE SKIP LOCKED";
pub(crate) const FREE_BUCKET_BEFORE: &str = "SELECT bucket FROM inventory_bucket WHERE sku = ? AND bucket < ? AND stock >= ? \
     ORDER BY bucket LIMIT 1 FOR UPDATE SKIP LOCKED";

/// Every bucket with room is busy: wait for one of them, chosen at random. Binds: sku, units.
pub(crate) const ANY_BUCKET_WITH_ROOM: &str =
    "SELECT bucket FROM inventory_bucket WHERE sku = ? AND stock >= ? ORDER BY RAND() LIMIT 1";

/// Binds: units, sku, bucket, units. A guarded single-row UPDATE waits for that row only and
/// re-checks its stock.
pub(crate) const TAKE_FROM_BUCKET: &str =
    "UPDATE inventory_bucket SET stock = stock - ? WHERE sku = ? AND bucket = ? AND stock >= ?";

/// Buckets before the row: a `Sharded` deduction holds its bucket when its ledger insert's
/// foreign-key check asks for a shared lock on the row, so holding the row while waiting for
/// a bucket would deadlock.
pub(crate) const LOCK_ALL_BUCKETS: &str =
    "SELECT bucket, stock FROM inventory_bucket WHERE sku = ? ORDER BY bucket FOR UPDATE";
pub(crate) const LOCK_ALL_ROW: &str = "SELECT stock, (SELECT COUNT(*) FROM inventory_bucket b WHERE b.sku = i.sku) \
     FROM inventory i WHERE i.sku = ? FOR UPDATE";

pub(crate) const EMPTY_ROW_AND_MARK_SHARDED: &str =
    "UPDATE inventory SET stock = 0, sharded = TRUE, version = version + 1 WHERE sku = ?";

pub(crate) const EMPTY_BUCKETS: &str = "UPDATE inventory_bucket SET stock = 0 WHERE sku = ? AND stock > 0";
/// Binds: units, sku.
pub(crate) const ADD_TO_ROW: &str =
    "UPDATE inventory SET stock = stock + ?, version = version + 1 WHERE sku = ?";

/// Binds: order id, canonical lines, line count. A taken id fails with 1062 on
/// `inventory_order_idempotency_key`; a concurrent claim waits for the other transaction.
pub(crate) const CLAIM_ORDER: &str =
    "INSERT INTO inventory_order (order_id, `lines`, line_count) VALUES (?, ?, ?)";

/// Binds: order id.
pub(crate) const ORDER_LINES: &str = "SELECT `lines` FROM inventory_order WHERE order_id = ?";
pub(crate) const ORDER_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reference = ? AND reason = 'order' ORDER BY id"
);

/// Binds: sku, delta, stock_after, reason, reference. A line's ledger row (an order's or a
/// hold's): no key of its own.
pub(crate) const INSERT_LINE: &str =
    "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) VALUES (?, ?, ?, ?, ?)";

/// Binds: row stock after, reserved delta, sku.
pub(crate) const SET_ROW_STOCK_RESERVED: &str =
    "UPDATE inventory SET stock = ?, reserved = reserved + ?, version = version + 1 WHERE sku = ?";

/// Binds: stock delta, reserved delta, sku, stock delta, reserved delta. A line's conditional
/// write: neither column below zero.
pub(crate) const GUARDED_LINE_UPDATE: &str = "UPDATE inventory SET stock = stock + ?, reserved = reserved + ?, \
     version = version + 1 WHERE sku = ? AND stock + ? >= 0 AND reserved + ? >= 0";

/// A hold row's columns, in `StoredHoldRow` order (due: 1 or 0 on this server's clock).
macro_rules! hold_columns {
    () => {
        "hold_id, `lines`, state, expires_at, CAST(state = 'active' AND expires_at <= NOW(6) AS SIGNED)"
    };
}

/// Binds: hold id, canonical lines, line count, seconds to live. A taken id fails with 1062 on
/// `inventory_hold_idempotency_key`.
pub(crate) const CLAIM_HOLD: &str = "INSERT INTO inventory_hold (hold_id, `lines`, line_count, expires_at) \
     VALUES (?, ?, ?, NOW(6) + INTERVAL ? SECOND)";
/// MariaDB: `CLAIM_HOLD` returning the expiry in the same round trip.
pub(crate) const CLAIM_HOLD_RETURNING: &str = "INSERT INTO inventory_hold (hold_id, `lines`, line_count, expires_at) \
     VALUES (?, ?, ?, NOW(6) + INTERVAL ? SECOND) RETURNING expires_at";
/// MySQL (no `INSERT … RETURNING`): the expiry read back in the same transaction. Binds: hold id.
pub(crate) const HOLD_EXPIRY: &str = "SELECT expires_at FROM inventory_hold WHERE hold_id = ?";
/// Binds: hold id.
pub(crate) const FIND_HOLD: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE hold_id = ?"
);
pub(crate) const LOCK_HOLD: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE hold_id = ? FOR UPDATE"
);
/// Completed with the hold ids and `) ORDER BY id`.
pub(crate) const HOLD_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reason IN ('reserve', 'confirm', 'release', 'expire') AND reference IN ("
);
/// The sweeper. Binds: holds at most. Skips holds another transaction holds (MariaDB 10.6+,
/// MySQL 8.0+).
pub(crate) const LOCK_DUE_ANY: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE state = 'active' AND expires_at <= NOW(6) \
     ORDER BY expires_at, hold_id LIMIT ? FOR UPDATE SKIP LOCKED"
);
/// A refusal's expiry. Binds: sku, holds at most. Waits for holds another transaction holds.
pub(crate) const LOCK_DUE_ON: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold h WHERE state = 'active' AND expires_at <= NOW(6) \
     AND EXISTS (SELECT 1 FROM inventory_ledger l WHERE l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = ?) \
     ORDER BY expires_at, hold_id LIMIT ? FOR UPDATE"
);
/// Binds: sku.
pub(crate) const HAS_DUE_ON: &str = concat!("SELECT ", due_holds_of!("?"));
/// Binds: final state, hold id.
pub(crate) const SET_HOLD_STATE: &str =
    "UPDATE inventory_hold SET state = ?, resolved_at = NOW(6) WHERE hold_id = ?";
/// Resolution: waits for whatever holds the hold's row. Binds: hold id.
pub(crate) const SETTLE_HOLD: &str =
    "SELECT hold_id FROM inventory_hold WHERE hold_id = ? LOCK IN SHARE MODE";

/// The audit's hold check: every hold's ledger rows, summed (see `HoldRows`).
pub(crate) const HOLD_ROWS: &str = "SELECT h.hold_id, h.state, CAST(h.line_count AS SIGNED), \
            CAST(COALESCE(SUM(l.reason = 'reserve'), 0) AS SIGNED), \
            CAST(COALESCE(SUM(l.reason = 'confirm'), 0) AS SIGNED), \
            CAST(COALESCE(SUM(l.reason = 'release'), 0) AS SIGNED), \
            CAST(COALESCE(SUM(l.reason = 'expire'), 0) AS SIGNED), \
            CAST(COALESCE(SUM(CASE WHEN l.reason = 'reserve' THEN -l.delta ELSE 0 END), 0) AS SIGNED), \
            CAST(COALESCE(SUM(CASE WHEN l.reason IN ('release', 'expire') THEN l.delta ELSE 0 END), 0) AS SIGNED), \
            CAST(COALESCE(SUM(CASE WHEN l.reason = 'confirm' THEN l.delta ELSE 0 END), 0) AS SIGNED) \
     FROM inventory_hold h LEFT JOIN inventory_ledger l \
       ON l.reference = h.hold_id AND l.reason IN ('reserve', 'confirm', 'release', 'expire') \
     GROUP BY h.hold_id, h.state, h.line_count ORDER BY h.hold_id";
/// SKUs whose `reserved` is not their active holds' units.
pub(crate) const RESERVED_MISMATCHES: &str = "SELECT i.sku, i.reserved, CAST(COALESCE(a.held, 0) AS SIGNED) \
     FROM inventory i LEFT JOIN ( \
         SELECT l.sku, SUM(-l.delta) AS held FROM inventory_ledger l \
         JOIN inventory_hold h ON h.hold_id = l.reference AND h.state = 'active' \
         WHERE l.reason = 'reserve' GROUP BY l.sku) a ON a.sku = i.sku \
     WHERE i.reserved <> COALESCE(a.held, 0) OR i.reserved < 0 ORDER BY i.sku";

/// The audit's order check: how many orders there are, and every order whose `order` ledger
/// rows are not exactly its line count, plus `order` rows whose reference no order claimed
/// (line count 0).
pub(crate) const ORDER_COUNT: &str = "SELECT COUNT(*) FROM inventory_order";
pub(crate) const INCOMPLETE_ORDERS: &str = "SELECT o.order_id, CAST(o.line_count AS SIGNED), CAST(COUNT(l.id) AS SIGNED) \
     FROM inventory_order o LEFT JOIN inventory_ledger l ON l.reference = o.order_id AND l.reason = 'order' \
     GROUP BY o.order_id, o.line_count HAVING COUNT(l.id) <> o.line_count \
     UNION ALL \
     SELECT l.reference, CAST(0 AS SIGNED), CAST(COUNT(*) AS SIGNED) FROM inventory_ledger l \
     WHERE l.reason = 'order' AND NOT EXISTS (SELECT 1 FROM inventory_order o WHERE o.order_id = l.reference) \
     GROUP BY l.reference ORDER BY 1";

/// Binds: sku, delta, stock_after, key, reference, adjustment kind.
pub(crate) const INSERT_ADJUSTMENT: &str = "INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key, reference, adjustment) \
     VALUES (?, ?, ?, 'adjust', ?, ?, ?)";
