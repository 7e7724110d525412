-- The start-up probe's row (Backend::probe): one session locks it while another tries each
-- locking clause the adapter's SQL relies on, to learn whether the server honours it. Nothing
-- writes it after this migration.
CREATE TABLE stockguard_probe (id INTEGER PRIMARY KEY);
INSERT INTO stockguard_probe (id) VALUES (1);
