-- Stock and its ledger, the same tables and ledger semantics as the PostgreSQL adapter.
-- Every stock change writes exactly one ledger row in the same transaction, so
-- initial_stock + SUM(delta) = stock holds at every commit; the audit checks it.
--
-- STRICT tables make SQLite refuse a value of the wrong type instead of storing it anyway
-- (SQLite's default type affinity would accept 'abc' in an INTEGER column). The length
-- CHECKs stand in for PostgreSQL's VARCHAR(n), which SQLite does not enforce.
CREATE TABLE inventory (
    sku           TEXT    NOT NULL PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    stock         INTEGER NOT NULL CHECK (stock >= 0),
    initial_stock INTEGER NOT NULL CHECK (initial_stock >= 0),
    -- Bumped by every write; the optimistic strategy's compare-and-set reads it.
    version       INTEGER NOT NULL DEFAULT 0,
    -- RFC 3339 UTC with milliseconds, which sqlx decodes as DateTime<Utc>.
    created_at    TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE inventory_ledger (
    -- AUTOINCREMENT: ids only grow and are never reused, like PostgreSQL's identity column.
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    sku             TEXT    NOT NULL REFERENCES inventory (sku),
    delta           INTEGER NOT NULL CHECK (delta <> 0),
    stock_after     INTEGER NOT NULL CHECK (stock_after >= 0),
    reason          TEXT    NOT NULL CHECK (reason IN ('deduct', 'restock')),
    -- UNIQUE allows any number of NULLs: unkeyed requests never collide.
    idempotency_key TEXT    UNIQUE CHECK (idempotency_key IS NULL OR length(idempotency_key) BETWEEN 1 AND 128),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE INDEX inventory_ledger_sku_id ON inventory_ledger (sku, id);
