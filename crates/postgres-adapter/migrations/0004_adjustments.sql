-- Stock adjustments (returns, damage, recounts, restocks by hand): reason 'adjust', with the
-- kind here and the client's reference in `reference`. NULL for every other reason.
ALTER TABLE inventory_ledger ADD COLUMN adjustment VARCHAR(16)
    CHECK (adjustment IN ('return', 'damage', 'recount', 'restock'));
ALTER TABLE inventory_ledger ADD CONSTRAINT inventory_ledger_adjust_has_kind
    CHECK ((reason = 'adjust') = (adjustment IS NOT NULL)) NOT VALID;
ALTER TABLE inventory_ledger VALIDATE CONSTRAINT inventory_ledger_adjust_has_kind;
