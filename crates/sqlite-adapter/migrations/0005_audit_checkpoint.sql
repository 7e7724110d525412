-- The incremental audit's checkpoint: per SKU, the ledger rows up to through_ledger_id that
-- one audit read in one consistent snapshot, and their sums, which reconciled with the stock
-- of that snapshot. The next incremental audit reads only the rows after it. `stockguard
-- audit --full` ignores it and reads every row.
CREATE TABLE inventory_audit_checkpoint (
    sku               TEXT    NOT NULL PRIMARY KEY,
    through_ledger_id INTEGER NOT NULL CHECK (through_ledger_id >= 0),
    ledger_delta_sum  INTEGER NOT NULL,
    ledger_rows       INTEGER NOT NULL CHECK (ledger_rows >= 0),
    verified_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
