//! Every statement the PostgreSQL adapter sends, as constants.
//!
//! A SKU's stock is its row's `stock` plus its buckets' (`inventory_bucket`), see
//! `stockguard_core::sharding`. Row locks are `FOR NO KEY UPDATE`, never `FOR UPDATE`: the
//! ledger insert's foreign-key check takes `FOR KEY SHARE` on the SKU row, and a `FOR UPDATE`
//! lock would make every ledger writer (a `Sharded` bucket deduction, a concurrent batch)
//! wait for it for nothing.

/// Units of SKU `$1` held in `Sharded` buckets, as a bigint (`SUM(bigint)` is numeric).
macro_rules! bucket_stock_of_param1 {
    () => {
        "COALESCE((SELECT SUM(stock) FROM inventory_bucket WHERE sku = $1), 0)::bigint"
    };
}

/// The `stock_after` a row-based write (CTE `u` returning the row's new `stock` and its
/// `sharded` flag) records for SKU `$1` whose stock changed by `$delta`: exact (`u.stock`) for
/// a SKU never spread, without touching the buckets (the flag keeps the hot path at one row;
/// the subqueries run only for a sharded SKU), and while a sharded SKU holds no bucket stock;
/// otherwise the total in this statement's snapshot plus `$delta`, the same estimate
/// `Sharded` records. Not `u.stock + <bucket stock>`: `u.stock` comes from the row's latest
/// version, read after waiting for its lock, while the bucket sum comes from the snapshot
/// taken before the wait, so a gather committed in between would be counted twice.
macro_rules! total_after {
    ($delta:literal) => {
        concat!(
            "CASE WHEN NOT u.sharded THEN u.stock ELSE \
             (SELECT CASE WHEN t.bucket_stock = 0 THEN u.stock \
                          ELSE GREATEST(t.row_stock + t.bucket_stock + ",
            $delta,
            ", 0) END \
              FROM (SELECT stock AS row_stock, ",
            bucket_stock_of_param1!(),
            " AS bucket_stock FROM inventory WHERE sku = $1) t) END"
        )
    };
}

/// Columns of a ledger row, in `StoredLedgerRow` order.
macro_rules! ledger_columns {
    () => {
        "id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment"
    };
}

/// Units of SKU `$1` that due holds (active, past `expires_at`) still hold: reads count them
/// as available at once, before the sweeper writes the expiry.
macro_rules! due_units_of_param1 {
    () => {
        "(SELECT COALESCE(SUM(-l.delta), 0)::bigint FROM inventory_hold h \
          JOIN inventory_ledger l ON l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = $1 \
          WHERE h.state = 'active' AND h.expires_at <= now())"
    };
}

/// Touches every table: fails with 42P01 when the schema is missing.
pub(crate) const PING: &str = "SELECT (SELECT 1 FROM inventory LIMIT 1), (SELECT 1 FROM inventory_ledger LIMIT 1), \
     (SELECT 1 FROM inventory_bucket LIMIT 1), (SELECT 1 FROM inventory_order LIMIT 1), \
     (SELECT 1 FROM inventory_hold LIMIT 1)";

pub(crate) const CREATE_SKU: &str =
    "INSERT INTO inventory (sku, stock, initial_stock) VALUES ($1, $2, $2) ON CONFLICT (sku) DO NOTHING";

/// Available (row, buckets, and due holds' units), initial stock, version, and reserved less
/// due holds' units.
pub(crate) const STOCK: &str = concat!(
    "WITH d AS (SELECT ",
    due_units_of_param1!(),
    " AS units) SELECT i.stock + ",
    bucket_stock_of_param1!(),
    " + d.units, i.initial_stock, i.version, i.reserved - d.units FROM inventory i, d WHERE i.sku = $1"
);

pub(crate) const LEDGER_PAGE: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE sku = $1 AND id > $2 ORDER BY id LIMIT $3"
);

pub(crate) const SNAPSHOT: &str = "SELECT i.sku, i.initial_stock, (i.stock + COALESCE(b.bucket_stock, 0))::bigint, \
            COALESCE(l.delta_sum, 0)::bigint, COALESCE(l.row_count, 0)::bigint \
     FROM inventory i \
     LEFT JOIN (SELECT sku, SUM(delta) AS delta_sum, COUNT(*) AS row_count FROM inventory_ledger GROUP BY sku) l \
       ON l.sku = i.sku \
     LEFT JOIN (SELECT sku, SUM(stock) AS bucket_stock FROM inventory_bucket GROUP BY sku) b \
       ON b.sku = i.sku \
     ORDER BY i.sku";

/// One snapshot: the row's stock, its bucket stock, whether a due hold holds units of the SKU,
/// and key `$2`'s ledger row if any.
pub(crate) const MISS_FACTS: &str = concat!(
    "SELECT (SELECT stock FROM inventory WHERE sku = $1), ",
    bucket_stock_of_param1!(),
    ", (CASE WHEN ",
    due_units_of_param1!(),
    " > 0 THEN 1 ELSE 0 END)::bigint, l.id, l.sku, l.delta, l.stock_after, l.reason, l.idempotency_key, l.created_at, l.reference, l.adjustment \
     FROM (SELECT 1) AS one LEFT JOIN inventory_ledger l ON l.idempotency_key = $2"
);

/// Completed with the keys and `)` by the lookup.
pub(crate) const FIND_KEYS: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE idempotency_key IN ("
);

/// Resolution: share locks conflict with every writer's row and bucket locks, so taking them
/// waits out any transaction still holding them. Separate statements, so that the key lookup
/// after them reads a snapshot taken once the locks were granted (READ COMMITTED).
pub(crate) const SETTLE_ROW: &str = "SELECT 1 FROM inventory WHERE sku = $1 FOR SHARE";
pub(crate) const SETTLE_BUCKETS: &str =
    "SELECT 1 FROM inventory_bucket WHERE sku = $1 ORDER BY bucket FOR SHARE";

/// `$1` sku, `$2` units, `$3` key.
pub(crate) const GUARDED_DEDUCT: &str = concat!(
    "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                WHERE sku = $1 AND stock >= $2 RETURNING stock, sharded) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, -$2, ",
    total_after!("-$2"),
    ", 'deduct', $3 FROM u RETURNING id, stock_after"
);

/// `$1` sku, `$2` units, `$3` STOCK_MAX, `$4` key. Restocks go to the SKU row; the total
/// (row + buckets) stays within STOCK_MAX.
pub(crate) const RESTOCK: &str = concat!(
    "WITH u AS (UPDATE inventory SET stock = stock + $2, version = version + 1 \
                WHERE sku = $1 AND stock + ",
    bucket_stock_of_param1!(),
    " <= $3 - $2 RETURNING stock, sharded) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, $2, ",
    total_after!("$2"),
    ", 'restock', $4 FROM u RETURNING id, stock_after"
);

pub(crate) const READ_VERSIONED: &str = "SELECT stock, version, sharded FROM inventory WHERE sku = $1";

/// `$1` sku, `$2` row stock after, `$3` delta, `$4` key, `$5` expected version.
pub(crate) const COMPARE_AND_SET: &str = concat!(
    "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 \
                WHERE sku = $1 AND version = $5 RETURNING stock, sharded) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, $3, ",
    total_after!("$3"),
    ", 'deduct', $4 FROM u RETURNING id, stock_after"
);

/// The locked row's latest stock and flag, plus this statement's snapshot of the row and
/// bucket stock (for the estimate `total_after!` describes).
macro_rules! lock_row {
    ($wait:literal) => {
        concat!(
            "SELECT i.stock, i.sharded, (SELECT s.stock FROM inventory s WHERE s.sku = $1), ",
            bucket_stock_of_param1!(),
            " FROM inventory i WHERE i.sku = $1 FOR NO KEY UPDATE",
            $wait
        )
    };
}
pub(crate) const LOCK_ROW: &str = lock_row!("");
pub(crate) const LOCK_ROW_NOWAIT: &str = lock_row!(" NOWAIT");

/// `$1` sku, `$2` row stock after, `$3` units, `$4` stock_after, `$5` key.
pub(crate) const WRITE_ROW: &str = "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     VALUES ($1, -$3, $4, 'deduct', $5) RETURNING id, stock_after";

/// `Coalesced`, self-contained: `$1` sku, `$2` the batch's units, `$3` units[], `$4` units
/// up to and including each request[], `$5` keys[]. Applies only when the unsharded row
/// covers all of it (no row: nothing written, nothing returned). Each ledger row's stock
/// after is the row's stock before the batch less the units up to it. Returns each row's
/// id, stock after and key, so rows are matched by key, never assumed in order.
pub(crate) const WRITE_BATCH_ALONE: &str = "WITH u AS (UPDATE inventory SET stock = stock - $2, version = version + 1 \
                WHERE sku = $1 AND stock >= $2 AND NOT sharded RETURNING sku, stock) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT u.sku, -t.q, u.stock + $2 - t.upto, 'deduct', t.k \
     FROM u, UNNEST($3::bigint[], $4::bigint[], $5::varchar[]) WITH ORDINALITY AS t(q, upto, k, ord) \
     ORDER BY t.ord RETURNING id, stock_after, idempotency_key";

/// `$1` sku, `$2` row stock after, `$3` units[], `$4` stock_after[], `$5` keys[]. Returns
/// each row's id with its key, so ids are matched by key, never assumed in order.
pub(crate) const WRITE_BATCH: &str = "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1 RETURNING sku) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT u.sku, -t.q, t.after, 'deduct', t.k \
     FROM u, UNNEST($3::bigint[], $4::bigint[], $5::varchar[]) WITH ORDINALITY AS t(q, after, k, ord) \
     ORDER BY t.ord RETURNING id, idempotency_key";

/// `Sharded` first attempt, one statement that always returns one row `(id, stock_after,
/// sharded)`; `id` is NULL when nothing was taken. For SKU `$1`, `$2` units, key `$3`:
/// - a sharded SKU (it has bucket rows): a random bucket with room that no one holds
///   (`FOR UPDATE SKIP LOCKED`), decremented; `stock_after` is the statement snapshot's total
///   less this deduction;
/// - an unsharded SKU: its row, if no one holds it (`FOR NO KEY UPDATE SKIP LOCKED`) and it has
///   room (and `$4`, "take unsharded rows", is true), decremented like `Guarded`; `stock_after`
///   is exact. A busy row is the signal to spread the SKU: the caller takes the consistent path.
///
/// The two branches exclude each other: both test "has bucket rows" in the same snapshot, and
/// a spread committed after the snapshot changed the row, which fails the row's recheck.
pub(crate) const TAKE_FREE_BUCKET: &str = concat!(
    "WITH b AS (SELECT bucket FROM inventory_bucket WHERE sku = $1 AND stock >= $2 \
                ORDER BY random() LIMIT 1 FOR UPDATE SKIP LOCKED), \
          ub AS (UPDATE inventory_bucket ib SET stock = ib.stock - $2 FROM b \
                 WHERE ib.sku = $1 AND ib.bucket = b.bucket AND ib.stock >= $2 RETURNING ib.stock), \
          r AS (SELECT sku FROM inventory WHERE sku = $1 AND stock >= $2 AND $4 \
                AND NOT EXISTS (SELECT 1 FROM inventory_bucket WHERE sku = $1) \
                FOR NO KEY UPDATE SKIP LOCKED), \
          ur AS (UPDATE inventory i SET stock = i.stock - $2, version = i.version + 1 FROM r \
                 WHERE i.sku = r.sku AND i.stock >= $2 RETURNING i.stock), \
          ins AS (INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
                  SELECT $1, -$2, t.after, 'deduct', $3 FROM ( \
                      SELECT GREATEST((SELECT stock FROM inventory WHERE sku = $1) + ",
    bucket_stock_of_param1!(),
    " - $2, 0) AS after FROM ub \
                      UNION ALL SELECT ur.stock FROM ur) t \
                  RETURNING id, stock_after) \
     SELECT ins.id, ins.stock_after, EXISTS (SELECT 1 FROM inventory_bucket WHERE sku = $1) AS sharded \
     FROM (SELECT 1) AS one LEFT JOIN ins ON true"
);

/// `Sharded` second attempt on a sharded SKU whose free buckets had no room: wait for one
/// random bucket with room. The `UPDATE` waits for that one row and rechecks its stock.
/// Deliberately no `FOR UPDATE` in the pick: a locking pick whose row fails the recheck keeps
/// that lock and moves on to wait for the next row, and holding one bucket while waiting for
/// another deadlocks against the consistent path (seen in testing).
pub(crate) const WAIT_FOR_BUCKET: &str = concat!(
    "WITH b AS (SELECT bucket FROM inventory_bucket WHERE sku = $1 AND stock >= $2 \
                ORDER BY random() LIMIT 1), \
          u AS (UPDATE inventory_bucket ib SET stock = ib.stock - $2 FROM b \
                WHERE ib.sku = $1 AND ib.bucket = b.bucket AND ib.stock >= $2 RETURNING ib.stock) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     SELECT $1, -$2, GREATEST((SELECT stock FROM inventory WHERE sku = $1) + ",
    bucket_stock_of_param1!(),
    " - $2, 0), 'deduct', $3 FROM u RETURNING id, stock_after"
);

/// The one lock order of every path that locks a SKU and its buckets: row, then buckets in
/// bucket order.
pub(crate) const LOCK_ALL_ROW: &str = "SELECT stock FROM inventory WHERE sku = $1 FOR NO KEY UPDATE";
pub(crate) const LOCK_ALL_BUCKETS: &str =
    "SELECT bucket, stock FROM inventory_bucket WHERE sku = $1 ORDER BY bucket FOR UPDATE";

/// `$1` sku, `$2` buckets[], `$3` stocks[], `$4` units, `$5` stock_after, `$6` key.
pub(crate) const WRITE_SPREAD: &str = "WITH spread AS (INSERT INTO inventory_bucket (sku, bucket, stock) \
                     SELECT $1, t.b, t.s FROM UNNEST($2::int[], $3::bigint[]) AS t(b, s) \
                     ON CONFLICT (sku, bucket) DO UPDATE SET stock = EXCLUDED.stock), \
          emptied AS (UPDATE inventory SET stock = 0, sharded = TRUE, version = version + 1 WHERE sku = $1) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key) \
     VALUES ($1, -$4, $5, 'deduct', $6) RETURNING id, stock_after";

/// `$1` sku, `$2` the bucket stock moved into the row.
pub(crate) const WRITE_GATHER: &str = "WITH emptied AS (UPDATE inventory_bucket SET stock = 0 WHERE sku = $1 AND stock > 0) \
     UPDATE inventory SET stock = stock + $2, version = version + 1 WHERE sku = $1";

/// `$1` order id, `$2` canonical lines, `$3` line count. A taken id fails with 23505 on
/// `inventory_order_idempotency_key`; a concurrent claim waits for the other transaction.
pub(crate) const CLAIM_ORDER: &str =
    "INSERT INTO inventory_order (order_id, lines, line_count) VALUES ($1, $2, $3)";

/// `$1` order id.
pub(crate) const ORDER_LINES: &str = "SELECT lines FROM inventory_order WHERE order_id = $1";
pub(crate) const ORDER_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reference = $1 AND reason = 'order' ORDER BY id"
);

/// `$1` sku, `$2` row stock after, `$3` stock delta, `$4` stock_after, `$5` reference,
/// `$6` reserved delta, `$7` reason.
pub(crate) const WRITE_LINE: &str = "WITH u AS (UPDATE inventory SET stock = $2, reserved = reserved + $6, \
                version = version + 1 WHERE sku = $1) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) \
     VALUES ($1, $3, $4, $7, $5) RETURNING id, stock_after";

/// `$1` sku, `$2` stock delta, `$3` reference, `$4` reserved delta, `$5` reason:
/// `GUARDED_DEDUCT` for a line of an order or a hold, neither column below zero.
pub(crate) const GUARDED_LINE: &str = concat!(
    "WITH u AS (UPDATE inventory SET stock = stock + $2, reserved = reserved + $4, version = version + 1 \
                WHERE sku = $1 AND stock + $2 >= 0 AND reserved + $4 >= 0 RETURNING stock, sharded) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) \
     SELECT $1, $2, ",
    total_after!("$2"),
    ", $5, $3 FROM u RETURNING id, stock_after"
);

/// A hold row's columns, in `StoredHoldRow` order (due: 1 or 0 on this database's clock).
macro_rules! hold_columns {
    () => {
        "hold_id, lines, state, expires_at, \
         (CASE WHEN state = 'active' AND expires_at <= now() THEN 1 ELSE 0 END)::bigint"
    };
}

/// `$1` hold id, `$2` canonical lines, `$3` line count, `$4` seconds to live. A taken id
/// fails with 23505 on `inventory_hold_idempotency_key`.
pub(crate) const CLAIM_HOLD: &str = "INSERT INTO inventory_hold (hold_id, lines, line_count, expires_at) \
     VALUES ($1, $2, $3, now() + make_interval(secs => $4)) RETURNING expires_at";

/// `$1` hold id.
pub(crate) const FIND_HOLD: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE hold_id = $1"
);
pub(crate) const LOCK_HOLD: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE hold_id = $1 FOR UPDATE"
);
/// Completed with the hold ids and `) ORDER BY id`.
pub(crate) const HOLD_ENTRIES: &str = concat!(
    "SELECT ",
    ledger_columns!(),
    " FROM inventory_ledger WHERE reason IN ('reserve', 'confirm', 'release', 'expire') AND reference IN ("
);

/// The sweeper: `$1` holds at most, skipping those another transaction holds.
pub(crate) const LOCK_DUE_ANY: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold WHERE state = 'active' AND expires_at <= now() \
     ORDER BY expires_at, hold_id LIMIT $1 FOR UPDATE SKIP LOCKED"
);
/// A refusal's expiry: `$1` sku, `$2` holds at most, waiting for those another transaction
/// holds (and rechecking them once granted).
pub(crate) const LOCK_DUE_ON: &str = concat!(
    "SELECT ",
    hold_columns!(),
    " FROM inventory_hold h WHERE state = 'active' AND expires_at <= now() \
     AND EXISTS (SELECT 1 FROM inventory_ledger l WHERE l.reference = h.hold_id AND l.reason = 'reserve' AND l.sku = $1) \
     ORDER BY expires_at, hold_id LIMIT $2 FOR UPDATE"
);
/// `$1` sku.
pub(crate) const HAS_DUE_ON: &str = concat!("SELECT ", due_units_of_param1!(), " > 0");
/// `$1` hold id, `$2` final state.
pub(crate) const SET_HOLD_STATE: &str =
    "UPDATE inventory_hold SET state = $2, resolved_at = now() WHERE hold_id = $1";
/// Resolution: waits for whatever holds the hold's row.
pub(crate) const SETTLE_HOLD: &str = "SELECT 1 FROM inventory_hold WHERE hold_id = $1 FOR SHARE";

/// The audit's hold check: every hold's ledger rows, summed (see `HoldRows`).
pub(crate) const HOLD_ROWS: &str = "SELECT h.hold_id::text, h.state::text, h.line_count::bigint, \
            COUNT(*) FILTER (WHERE l.reason = 'reserve'), COUNT(*) FILTER (WHERE l.reason = 'confirm'), \
            COUNT(*) FILTER (WHERE l.reason = 'release'), COUNT(*) FILTER (WHERE l.reason = 'expire'), \
            COALESCE(SUM(-l.delta) FILTER (WHERE l.reason = 'reserve'), 0)::bigint, \
            COALESCE(SUM(l.delta) FILTER (WHERE l.reason IN ('release', 'expire')), 0)::bigint, \
            COALESCE(SUM(l.delta) FILTER (WHERE l.reason = 'confirm'), 0)::bigint \
     FROM inventory_hold h LEFT JOIN inventory_ledger l \
       ON l.reference = h.hold_id AND l.reason IN ('reserve', 'confirm', 'release', 'expire') \
     GROUP BY h.hold_id, h.state, h.line_count ORDER BY h.hold_id";
/// SKUs whose `reserved` is not their active holds' units.
pub(crate) const RESERVED_MISMATCHES: &str = "SELECT i.sku::text, i.reserved, COALESCE(a.held, 0)::bigint \
     FROM inventory i LEFT JOIN ( \
         SELECT l.sku, SUM(-l.delta) AS held FROM inventory_ledger l \
         JOIN inventory_hold h ON h.hold_id = l.reference AND h.state = 'active' \
         WHERE l.reason = 'reserve' GROUP BY l.sku) a ON a.sku = i.sku \
     WHERE i.reserved <> COALESCE(a.held, 0) OR i.reserved < 0 ORDER BY i.sku";

/// The audit's order check: how many orders there are, and every order whose `order` ledger
/// rows are not exactly its line count, plus `order` rows whose reference no order claimed
/// (line count 0).
pub(crate) const ORDER_COUNT: &str = "SELECT COUNT(*) FROM inventory_order";
pub(crate) const INCOMPLETE_ORDERS: &str = "SELECT o.order_id::text, o.line_count::bigint, COUNT(l.id) \
     FROM inventory_order o LEFT JOIN inventory_ledger l ON l.reference = o.order_id AND l.reason = 'order' \
     GROUP BY o.order_id, o.line_count HAVING COUNT(l.id) <> o.line_count \
     UNION ALL \
     SELECT l.reference::text, 0::bigint, COUNT(*) FROM inventory_ledger l \
     WHERE l.reason = 'order' AND NOT EXISTS (SELECT 1 FROM inventory_order o WHERE o.order_id = l.reference) \
     GROUP BY l.reference ORDER BY 1";

/// `$1` sku, `$2` row stock after, `$3` delta, `$4` stock_after, `$5` key, `$6` reference,
/// `$7` adjustment kind.
pub(crate) const WRITE_ADJUSTMENT: &str = "WITH u AS (UPDATE inventory SET stock = $2, version = version + 1 WHERE sku = $1) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, idempotency_key, reference, adjustment) \
     VALUES ($1, $3, $4, 'adjust', $5, $6, $7) RETURNING id, stock_after";

/// `$1` skus[] (distinct): their rows, locked in byte order of the SKU id (the canonical
/// order: ids are ASCII), which `LockRows` above the sort follows.
pub(crate) const LOCK_ROWS: &str = "SELECT sku::text, stock, sharded FROM inventory \
     WHERE sku = ANY($1::text[]) ORDER BY sku COLLATE \"C\" FOR NO KEY UPDATE";

/// `$1` order ids[], `$2` canonical lines[], `$3` line counts[]. A taken id fails with 23505
/// on `inventory_order_idempotency_key`, as `CLAIM_ORDER` does.
pub(crate) const CLAIM_ORDERS: &str = "INSERT INTO inventory_order (order_id, lines, line_count) \
     SELECT * FROM UNNEST($1::text[], $2::text[], $3::int[])";

/// A batch's lines in one statement: `$1` skus[], `$2` stock deltas[], `$3` stock_after[],
/// `$4` references[], `$5` reasons[], `$6` reserved deltas[], `$7` row stock after[]. Each
/// row is set to its last line's row stock and moved by all its lines' reserved deltas; one
/// ledger row per line. Returns `(id, reference, sku, stock_after)` per line, in any order.
pub(crate) const WRITE_LINES: &str = "WITH l AS (SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], \
                $4::text[], $5::text[], $6::bigint[], $7::bigint[]) WITH ORDINALITY \
                AS t(sku, delta, stock_after, reference, reason, reserved_delta, row_after, ord)), \
          f AS (SELECT DISTINCT ON (sku) sku, row_after, \
                       (SUM(reserved_delta) OVER (PARTITION BY sku))::bigint AS reserved_delta \
                FROM l ORDER BY sku, ord DESC), \
          u AS (UPDATE inventory i SET stock = f.row_after, reserved = i.reserved + f.reserved_delta, \
                       version = i.version + 1 FROM f WHERE i.sku = f.sku) \
     INSERT INTO inventory_ledger (sku, delta, stock_after, reason, reference) \
     SELECT sku, delta, stock_after, reason, reference FROM l ORDER BY ord \
     RETURNING id, reference::text, sku::text, stock_after";
