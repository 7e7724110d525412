\set sku random(1, :nsku)
WITH u AS (UPDATE inventory SET stock = stock - 1 WHERE sku = :sku AND stock >= 1 RETURNING sku, stock)
INSERT INTO inventory_log(sku, delta, remaining) SELECT sku, -1, stock FROM u;
