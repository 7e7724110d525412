-- Stock and its ledger. Every stock change writes exactly one ledger row in the same
-- transaction, so initial_stock + SUM(delta) = stock holds at every commit; the audit checks it.
CREATE TABLE inventory (
    sku           VARCHAR(64) PRIMARY KEY,
    stock         BIGINT      NOT NULL CHECK (stock >= 0),
    initial_stock BIGINT      NOT NULL CHECK (initial_stock >= 0),
    -- Bumped by every write; the optimistic strategy's compare-and-set reads it.
    version       BIGINT      NOT NULL DEFAULT 0,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE inventory_ledger (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sku             VARCHAR(64)  NOT NULL REFERENCES inventory (sku),
    delta           BIGINT       NOT NULL CHECK (delta <> 0),
    stock_after     BIGINT       NOT NULL CHECK (stock_after >= 0),
    reason          TEXT         NOT NULL CHECK (reason IN ('deduct', 'restock')),
    -- UNIQUE allows any number of NULLs: unkeyed requests never collide.
    idempotency_key VARCHAR(128) UNIQUE,
    created_at      TIMESTAMPTZ  NOT NULL DEFAULT now()
);

CREATE INDEX inventory_ledger_sku_id ON inventory_ledger (sku, id);
