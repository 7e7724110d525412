-- Multi-line orders. An order claims its id in `inventory_order` in the same transaction
-- as its lines, so the id is its idempotency key; each line writes one ledger row with
-- reason 'order' and the order id as its reference. The audit checks that every order has
-- as many ledger rows as its line_count (all lines or none).
--
-- The reason CHECK lists the reasons of the checkout lifecycle (holds, adjustments) now,
-- so later migrations need not rebuild it. It is added NOT VALID and then validated: the
-- validation scans existing rows without blocking writers.
ALTER TABLE inventory_ledger ADD COLUMN reference VARCHAR(128);
ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_reason_check;
ALTER TABLE inventory_ledger ADD CONSTRAINT inventory_ledger_reason_check
    CHECK (reason IN ('deduct', 'restock', 'order', 'reserve', 'confirm', 'release', 'expire', 'adjust')) NOT VALID;
ALTER TABLE inventory_ledger VALIDATE CONSTRAINT inventory_ledger_reason_check;
ALTER TABLE inventory_ledger ADD CONSTRAINT inventory_ledger_order_has_reference
    CHECK (reason <> 'order' OR reference IS NOT NULL) NOT VALID;
ALTER TABLE inventory_ledger VALIDATE CONSTRAINT inventory_ledger_order_has_reference;
CREATE INDEX inventory_ledger_reference ON inventory_ledger (reference) WHERE reference IS NOT NULL;

-- The constraint's name contains "idempotency_key": the adapter maps its 23505 to a taken
-- key, as for the ledger's.
CREATE TABLE inventory_order (
    order_id   VARCHAR(128) NOT NULL,
    lines      TEXT         NOT NULL,
    line_count INTEGER      NOT NULL CHECK (line_count > 0),
    created_at TIMESTAMPTZ  NOT NULL DEFAULT now(),
    CONSTRAINT inventory_order_idempotency_key PRIMARY KEY (order_id)
);
