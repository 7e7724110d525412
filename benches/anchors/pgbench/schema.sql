CREATE TABLE inventory (sku bigint PRIMARY KEY, stock bigint NOT NULL CHECK (stock >= 0), version bigint NOT NULL DEFAULT 0);
CREATE TABLE inventory_log (id bigserial PRIMARY KEY, sku bigint NOT NULL, delta bigint NOT NULL, remaining bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
INSERT INTO inventory SELECT g, 1000000000000, 0 FROM generate_series(1,100000) g;
VACUUM ANALYZE;
