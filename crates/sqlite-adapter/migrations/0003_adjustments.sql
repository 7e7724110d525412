-- Stock adjustments (returns, damage, recounts, restocks by hand): reason 'adjust', with the
-- kind here and the client's reference in `reference`. NULL for every other reason. SQLite
-- adds a column with a CHECK in place (existing rows hold NULL, which passes); a CHECK
-- across two columns cannot be added without a rebuild, so the adapter keeps that rule.
ALTER TABLE inventory_ledger ADD COLUMN adjustment TEXT
    CHECK (adjustment IS NULL OR adjustment IN ('return', 'damage', 'recount', 'restock'));
