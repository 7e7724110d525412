-- Stock adjustments (returns, damage, recounts, restocks by hand): reason 'adjust', with the
-- kind here and the client's reference in `reference`. NULL for every other reason.
ALTER TABLE inventory_ledger
    ADD COLUMN adjustment VARCHAR(16) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
    ADD CONSTRAINT inventory_ledger_adjustment_known
        CHECK (adjustment IS NULL OR adjustment IN ('return', 'damage', 'recount', 'restock')),
    ADD CONSTRAINT inventory_ledger_adjust_has_kind CHECK ((reason = 'adjust') = (adjustment IS NOT NULL));
