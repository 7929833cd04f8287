-- One row per imported file (see the PostgreSQL dialect).
CREATE TABLE imports (
    id               INTEGER PRIMARY KEY,
    campaign_id      INTEGER NOT NULL REFERENCES campaigns (id),
    source_name      TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    rows_read        INTEGER NOT NULL,
    accepted         INTEGER NOT NULL,
    rejected         INTEGER NOT NULL,
    duplicates       INTEGER NOT NULL,
    email            INTEGER NOT NULL,
    postal           INTEGER NOT NULL,
    shared_addresses INTEGER NOT NULL,
    actor            TEXT NOT NULL,
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    CONSTRAINT imports_reconcile CHECK (rows_read = accepted + rejected + duplicates AND accepted = email + postal)
);
CREATE INDEX imports_campaign ON imports (campaign_id, id);
CREATE TRIGGER imports_no_update BEFORE UPDATE ON imports BEGIN
    SELECT RAISE(ABORT, 'UPDATE on imports is not allowed: this table is an append-only record');
END;
CREATE TRIGGER imports_no_delete BEFORE DELETE ON imports BEGIN
    SELECT RAISE(ABORT, 'DELETE on imports is not allowed: this table is an append-only record');
END;
