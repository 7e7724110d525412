-- Holds (reservations), as on PostgreSQL: a hold moves its units from `stock` into
-- `reserved` at once, so every strategy's check already counts active holds; on hand is
-- stock + reserved. Its lines are its ledger rows: 'reserve' (negative delta), then at most
-- one resolution per line: 'confirm' (delta 0), 'release' or 'expire' (positive delta).
--
-- A confirm row's delta is 0, which the ledger's CHECK (delta <> 0) refuses, and SQLite
-- cannot change a CHECK in place: the ledger is rebuilt once more (its rows, ids and the
-- AUTOINCREMENT counter kept, as in 0002), now also with the adjustment rule 0003 could not
-- add. sqlx runs each migration in a transaction.
ALTER TABLE inventory ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0);

CREATE TABLE inventory_ledger_next (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sku             TEXT    NOT NULL REFERENCES inventory (sku),
    delta           INTEGER NOT NULL,
    stock_after     INTEGER NOT NULL CHECK (stock_after >= 0),
    reason          TEXT    NOT NULL CHECK (reason IN ('deduct', 'restock', 'order', 'reserve', 'confirm', 'release', 'expire', 'adjust')),
    idempotency_key TEXT    UNIQUE CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 128),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    reference       TEXT    CHECK (reference IS NULL OR length(reference) BETWEEN 1 AND 128),
    adjustment      TEXT    CHECK (adjustment IS NULL OR adjustment IN ('return', 'damage', 'recount', 'restock')),
    CHECK (delta <> 0 OR reason = 'confirm'),
    CHECK (reason <> 'order' OR reference IS NOT NULL),
    CHECK (reason NOT IN ('reserve', 'confirm', 'release', 'expire') OR reference IS NOT NULL),
    CHECK ((reason = 'adjust') = (adjustment IS NOT NULL))
) STRICT;

INSERT INTO inventory_ledger_next
        (id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment)
    SELECT id, sku, delta, stock_after, reason, idempotency_key, created_at, reference, adjustment
    FROM inventory_ledger;
DELETE FROM sqlite_sequence WHERE name = 'inventory_ledger_next';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'inventory_ledger_next', seq FROM sqlite_sequence WHERE name = 'inventory_ledger';
DROP TABLE inventory_ledger;
ALTER TABLE inventory_ledger_next RENAME TO inventory_ledger;
CREATE INDEX inventory_ledger_sku_id ON inventory_ledger (sku, id);
CREATE INDEX inventory_ledger_reference ON inventory_ledger (reference) WHERE reference IS NOT NULL;
-- Each line of a hold is reserved once and resolved at most once per reason.
CREATE UNIQUE INDEX inventory_ledger_hold_line ON inventory_ledger (reference, sku, reason)
    WHERE reason IN ('reserve', 'confirm', 'release', 'expire');

CREATE TABLE inventory_hold (
    hold_id     TEXT    NOT NULL PRIMARY KEY CHECK (length(hold_id) BETWEEN 1 AND 128),
    lines       TEXT    NOT NULL,
    line_count  INTEGER NOT NULL CHECK (line_count > 0),
    state       TEXT    NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'confirmed', 'released', 'expired')),
    -- RFC 3339 UTC with milliseconds, like every timestamp here: compared as text.
    expires_at  TEXT    NOT NULL,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    resolved_at TEXT,
    CHECK ((state = 'active') = (resolved_at IS NULL))
) STRICT;
CREATE INDEX inventory_hold_due ON inventory_hold (expires_at) WHERE state = 'active';
