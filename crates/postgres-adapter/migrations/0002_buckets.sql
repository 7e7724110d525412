-- Stock buckets for the Sharded strategy. A SKU's stock is inventory.stock plus the stock of
-- its buckets. Moving units between the row and its buckets writes no ledger row (the total
-- does not change), so initial_stock + SUM(delta) = inventory.stock + SUM(bucket stock) holds
-- at every commit.
CREATE TABLE inventory_bucket (
    sku    VARCHAR(64) NOT NULL REFERENCES inventory (sku),
    bucket INTEGER     NOT NULL CHECK (bucket >= 0),
    stock  BIGINT      NOT NULL CHECK (stock >= 0),
    PRIMARY KEY (sku, bucket)
);
