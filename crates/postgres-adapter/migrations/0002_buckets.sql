-- Stock buckets for the Sharded strategy. A SKU's stock is inventory.stock plus the stock of
-- its buckets. Moving units between the row and its buckets writes no ledger row (the total
-- does not change), so initial_stock + SUM(delta) = inventory.stock + SUM(bucket stock) holds
-- at every commit.
--
-- `sharded` is set (under the row's lock) when a Sharded deduction first spreads the SKU. The
-- row-based strategies get it back from their UPDATE and only for a sharded SKU read the
-- buckets to report the total as stock_after.
ALTER TABLE inventory ADD COLUMN sharded BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE inventory_bucket (
    sku    VARCHAR(64) NOT NULL REFERENCES inventory (sku),
    bucket INTEGER     NOT NULL CHECK (bucket >= 0),
    stock  BIGINT      NOT NULL CHECK (stock >= 0),
    PRIMARY KEY (sku, bucket)
);
