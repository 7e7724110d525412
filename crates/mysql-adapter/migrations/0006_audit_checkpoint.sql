-- The incremental audit's checkpoint: per SKU, the ledger rows up to through_ledger_id that
-- one audit read in one consistent snapshot, and their sums, which reconciled with the stock
-- of that snapshot. The next incremental audit reads only the rows after it. `stockguard
-- audit --full` ignores it and reads every row.
CREATE TABLE inventory_audit_checkpoint (
    sku               VARCHAR(64) NOT NULL,
    through_ledger_id BIGINT      NOT NULL CHECK (through_ledger_id >= 0),
    ledger_delta_sum  BIGINT      NOT NULL,
    ledger_rows       BIGINT      NOT NULL CHECK (ledger_rows >= 0),
    verified_at       DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (sku)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
