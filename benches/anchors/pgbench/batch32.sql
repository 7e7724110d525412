\set sku random(1, :nsku)
WITH u AS (UPDATE inventory SET stock = stock - 32 WHERE sku = :sku AND stock >= 32 RETURNING sku, stock)
INSERT INTO inventory_log(sku, delta, remaining) SELECT sku, -1, stock + 32 - g FROM u, generate_series(1,32) g;
