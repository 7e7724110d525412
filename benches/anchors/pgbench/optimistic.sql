\set sku random(1, :nsku)
SELECT stock, version FROM inventory WHERE sku = :sku \gset
BEGIN;
WITH u AS (UPDATE inventory SET stock = stock - 1, version = version + 1 WHERE sku = :sku AND version = :version AND stock >= 1 RETURNING sku, stock)
INSERT INTO inventory_log(sku, delta, remaining) SELECT sku, -1, stock FROM u;
COMMIT;
