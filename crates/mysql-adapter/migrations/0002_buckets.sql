-- Stock buckets for the Sharded strategy, with the same meaning as on PostgreSQL: a SKU's
-- stock is inventory.stock plus the stock of its buckets, and moving units between the row
-- and its buckets writes no ledger row (the total does not change), so
-- initial_stock + SUM(delta) = inventory.stock + SUM(bucket stock) holds at every commit.
--
-- `sharded` is set (under the row's lock) the first time a Sharded deduction spreads the
-- SKU. The other strategies read it with the row they lock anyway, and only for a sharded
-- SKU spend a statement on adding bucket stock to the stock_after they report.
ALTER TABLE inventory ADD COLUMN sharded BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE inventory_bucket (
    sku    VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    bucket INT         NOT NULL,
    stock  BIGINT      NOT NULL,
    PRIMARY KEY (sku, bucket),
    CONSTRAINT inventory_bucket_sku_fk FOREIGN KEY (sku) REFERENCES inventory (sku),
    CONSTRAINT inventory_bucket_bucket_nonnegative CHECK (bucket >= 0),
    CONSTRAINT inventory_bucket_stock_nonnegative CHECK (stock >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
