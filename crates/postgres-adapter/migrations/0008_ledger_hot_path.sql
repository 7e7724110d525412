-- The hot path's ledger insert, made cheaper without weakening what it guarantees.
--
-- 1. Idempotency keys compare bytewise. Under a deterministic collation equality already is
--    byte equality, so uniqueness does not change; the key index just stops paying for
--    locale-aware ordering on every insert and lookup.
ALTER TABLE inventory_ledger ALTER COLUMN idempotency_key TYPE VARCHAR(128) COLLATE "C";

-- 2. The ledger's foreign key to inventory is checked on delete instead of on insert. Every
--    ledger row is written in the transaction that writes its SKU's inventory row, so an
--    insert cannot name a missing SKU; the per-row RI check it ran cost a trigger call per
--    ledger row while the hot row was held. What the key also stopped, a SKU with history
--    deleted, renamed or truncated away, these triggers still stop, and the audit reports a
--    ledger row whose SKU is missing.
ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_sku_fkey;

CREATE FUNCTION stockguard_keep_sku_with_history() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        IF EXISTS (SELECT 1 FROM inventory_ledger) THEN
            RAISE EXCEPTION 'inventory has ledger rows: truncating it would orphan them'
                USING ERRCODE = 'foreign_key_violation';
        END IF;
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM inventory_ledger WHERE sku = OLD.sku) THEN
        RAISE EXCEPTION 'SKU % has ledger rows: it cannot be deleted or renamed', OLD.sku
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
END $$;

CREATE TRIGGER inventory_delete_keeps_ledger BEFORE DELETE ON inventory
    FOR EACH ROW EXECUTE FUNCTION stockguard_keep_sku_with_history();
CREATE TRIGGER inventory_rename_keeps_ledger BEFORE UPDATE OF sku ON inventory
    FOR EACH ROW WHEN (OLD.sku IS DISTINCT FROM NEW.sku)
    EXECUTE FUNCTION stockguard_keep_sku_with_history();
CREATE TRIGGER inventory_keeps_ledger BEFORE TRUNCATE ON inventory
    FOR EACH STATEMENT EXECUTE FUNCTION stockguard_keep_sku_with_history();
