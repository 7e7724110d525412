-- Holds (reservations), as on PostgreSQL: a hold moves its units from `stock` into
-- `reserved` at once, so every strategy's check already counts active holds; on hand is
-- stock + reserved. Its lines are its ledger rows: 'reserve' (negative delta), then at most
-- one resolution per line: 'confirm' (delta 0), 'release' or 'expire' (positive delta).
--
-- PostgreSQL and SQLite also enforce "one row per line and reason" with a partial unique
-- index; MySQL and MariaDB have no partial index, so here the audit checks it.
ALTER TABLE inventory
    ADD COLUMN reserved BIGINT NOT NULL DEFAULT 0,
    ADD CONSTRAINT inventory_reserved_nonnegative CHECK (reserved >= 0);

ALTER TABLE inventory_ledger
    DROP CONSTRAINT inventory_ledger_delta_nonzero,
    ADD CONSTRAINT inventory_ledger_delta_nonzero CHECK (delta <> 0 OR reason = 'confirm'),
    ADD CONSTRAINT inventory_ledger_hold_has_reference
        CHECK (reason NOT IN ('reserve', 'confirm', 'release', 'expire') OR reference IS NOT NULL);

-- A surrogate primary key (Galera wants one on every table) and the hold id's unique index,
-- whose name the adapter reads from a 1062 to map it to a taken key.
CREATE TABLE inventory_hold (
    id          BIGINT       NOT NULL AUTO_INCREMENT,
    hold_id     VARCHAR(128) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    `lines`     TEXT         CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    line_count  INT          NOT NULL,
    state       VARCHAR(16)  CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL DEFAULT 'active',
    expires_at  DATETIME(6)  NOT NULL,
    created_at  DATETIME(6)  NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    resolved_at DATETIME(6)  NULL,
    PRIMARY KEY (id),
    CONSTRAINT inventory_hold_idempotency_key UNIQUE (hold_id),
    CONSTRAINT inventory_hold_line_count_positive CHECK (line_count > 0),
    CONSTRAINT inventory_hold_state_known CHECK (state IN ('active', 'confirmed', 'released', 'expired')),
    CONSTRAINT inventory_hold_resolved_once CHECK ((state = 'active') = (resolved_at IS NULL)),
    -- The sweeper's and the refusal path's scan: active holds by expiry.
    INDEX inventory_hold_due (state, expires_at)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
