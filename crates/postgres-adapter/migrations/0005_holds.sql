-- Holds (reservations). A hold moves its units from `stock` (what every strategy sells
-- from) into `reserved` at once, so every strategy's check already counts active holds;
-- on hand is stock + reserved. Its lines are its ledger rows: reason 'reserve' (negative
-- delta), then at most one resolution per line: 'confirm' (delta 0: the units leave
-- `reserved`, sold), 'release' or 'expire' (positive delta: back to `stock`). A partial
-- confirm writes 'confirm' and 'release' for a line. The hold row records its state, which
-- moves from 'active' to one final state, once.
ALTER TABLE inventory ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0;
ALTER TABLE inventory ADD CONSTRAINT inventory_reserved_nonnegative CHECK (reserved >= 0) NOT VALID;
ALTER TABLE inventory VALIDATE CONSTRAINT inventory_reserved_nonnegative;

ALTER TABLE inventory_ledger DROP CONSTRAINT inventory_ledger_delta_check;
ALTER TABLE inventory_ledger ADD CONSTRAINT inventory_ledger_delta_check
    CHECK (delta <> 0 OR reason = 'confirm') NOT VALID;
ALTER TABLE inventory_ledger VALIDATE CONSTRAINT inventory_ledger_delta_check;
ALTER TABLE inventory_ledger ADD CONSTRAINT inventory_ledger_hold_has_reference
    CHECK (reason NOT IN ('reserve', 'confirm', 'release', 'expire') OR reference IS NOT NULL) NOT VALID;
ALTER TABLE inventory_ledger VALIDATE CONSTRAINT inventory_ledger_hold_has_reference;
-- Each line of a hold is reserved once and resolved at most once per reason: a second
-- resolution of the same line cannot be written at all.
CREATE UNIQUE INDEX inventory_ledger_hold_line ON inventory_ledger (reference, sku, reason)
    WHERE reason IN ('reserve', 'confirm', 'release', 'expire');

-- The constraint's name contains "idempotency_key": the adapter maps its 23505 to a taken
-- key, as for orders.
CREATE TABLE inventory_hold (
    hold_id     VARCHAR(128) NOT NULL,
    lines       TEXT         NOT NULL,
    line_count  INTEGER      NOT NULL CHECK (line_count > 0),
    state       VARCHAR(16)  NOT NULL DEFAULT 'active'
                CHECK (state IN ('active', 'confirmed', 'released', 'expired')),
    expires_at  TIMESTAMPTZ  NOT NULL,
    created_at  TIMESTAMPTZ  NOT NULL DEFAULT now(),
    resolved_at TIMESTAMPTZ,
    CONSTRAINT inventory_hold_idempotency_key PRIMARY KEY (hold_id),
    CONSTRAINT inventory_hold_resolved_once CHECK ((state = 'active') = (resolved_at IS NULL))
);
-- The sweeper's and the refusal path's scan: active holds by expiry, nothing else.
CREATE INDEX inventory_hold_due ON inventory_hold (expires_at) WHERE state = 'active';
