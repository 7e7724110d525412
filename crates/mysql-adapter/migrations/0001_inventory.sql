-- Stock and its ledger, the same tables and semantics as the PostgreSQL migration. Every
-- stock change writes exactly one ledger row in the same transaction, so
-- initial_stock + SUM(delta) = stock holds at every commit; the audit checks it.
--
-- MySQL/MariaDB specifics:
-- - InnoDB for row locks, transactions, CHECK and foreign keys.
-- - utf8mb4_bin: ids compare byte for byte (case-sensitive), as text does on PostgreSQL.
--   It is a PAD SPACE collation, but SKU ids and idempotency keys cannot contain spaces
--   (core rejects them), so trailing-space equality never arises.
-- - DATETIME(6) in UTC (sqlx sets the session time_zone to +00:00): no TIMESTAMP 2038 limit.
-- - Constraints are named so error messages (1062 duplicate key, 4025/3819 CHECK) say which
--   one fired; the adapter's error mapping reads the duplicate key's name.
CREATE TABLE inventory (
    sku           VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    stock         BIGINT      NOT NULL,
    initial_stock BIGINT      NOT NULL,
    -- Bumped by every write; the optimistic strategy's compare-and-set reads it.
    version       BIGINT      NOT NULL DEFAULT 0,
    created_at    DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (sku),
    CONSTRAINT inventory_stock_nonnegative CHECK (stock >= 0),
    CONSTRAINT inventory_initial_stock_nonnegative CHECK (initial_stock >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE inventory_ledger (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    sku             VARCHAR(64)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    delta           BIGINT       NOT NULL,
    stock_after     BIGINT       NOT NULL,
    reason          VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    -- A UNIQUE index admits any number of NULLs in InnoDB: unkeyed requests never collide.
    idempotency_key VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    created_at      DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    CONSTRAINT inventory_ledger_idempotency_key UNIQUE (idempotency_key),
    CONSTRAINT inventory_ledger_sku_fk FOREIGN KEY (sku) REFERENCES inventory (sku),
    CONSTRAINT inventory_ledger_delta_nonzero CHECK (delta <> 0),
    CONSTRAINT inventory_ledger_stock_after_nonnegative CHECK (stock_after >= 0),
    CONSTRAINT inventory_ledger_reason_known CHECK (reason IN ('deduct', 'restock')),
    INDEX inventory_ledger_sku_id (sku, id)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
