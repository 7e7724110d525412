\set sku random(1, :nsku)
BEGIN;
SELECT stock FROM inventory WHERE sku = :sku FOR UPDATE \gset
\if :stock >= 1
UPDATE inventory SET stock = stock - 1 WHERE sku = :sku;
INSERT INTO inventory_log(sku, delta, remaining) VALUES (:sku, -1, :stock - 1);
\endif
COMMIT;
