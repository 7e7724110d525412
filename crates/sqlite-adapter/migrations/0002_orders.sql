-- Multi-line orders, as on PostgreSQL: an order claims its id in `inventory_order` in the
-- same transaction as its lines; each line writes one ledger row with reason 'order' and the
-- order id as its reference.
--
-- SQLite cannot change a CHECK in place, so the ledger is rebuilt (its rows, ids and the
-- AUTOINCREMENT counter kept) with the reasons of the checkout lifecycle (holds,
-- adjustments) listed now, so later migrations need not rebuild it again. sqlx runs each
-- migration in a transaction.
CREATE TABLE inventory_ledger_next (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sku             TEXT    NOT NULL REFERENCES inventory (sku),
    delta           INTEGER NOT NULL CHECK (delta <> 0),
    stock_after     INTEGER NOT NULL CHECK (stock_after >= 0),
    reason          TEXT    NOT NULL CHECK (reason IN ('deduct', 'restock', 'order', 'reserve', 'confirm', 'release', 'expire', 'adjust')),
    idempotency_key TEXT    UNIQUE CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 128),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    reference       TEXT    CHECK (reference IS NULL OR length(reference) BETWEEN 1 AND 128),
    CHECK (reason <> 'order' OR reference IS NOT NULL)
) STRICT;

INSERT INTO inventory_ledger_next (id, sku, delta, stock_after, reason, idempotency_key, created_at)
    SELECT id, sku, delta, stock_after, reason, idempotency_key, created_at FROM inventory_ledger;
-- The copy sets the new table's counter to the largest id it holds; the old counter can be
-- higher (rows at the end removed by hand), and ids must never be reused.
DELETE FROM sqlite_sequence WHERE name = 'inventory_ledger_next';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'inventory_ledger_next', seq FROM sqlite_sequence WHERE name = 'inventory_ledger';
DROP TABLE inventory_ledger;
ALTER TABLE inventory_ledger_next RENAME TO inventory_ledger;
CREATE INDEX inventory_ledger_sku_id ON inventory_ledger (sku, id);
CREATE INDEX inventory_ledger_reference ON inventory_ledger (reference) WHERE reference IS NOT NULL;

CREATE TABLE inventory_order (
    order_id   TEXT    NOT NULL PRIMARY KEY CHECK (length(order_id) BETWEEN 1 AND 128),
    lines      TEXT    NOT NULL,
    line_count INTEGER NOT NULL CHECK (line_count > 0),
    created_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
