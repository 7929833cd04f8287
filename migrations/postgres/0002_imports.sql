-- One row per imported file, with the reconciliation a regulator may ask for:
-- rows_read = accepted + rejected + duplicates, accepted = email + postal.
CREATE TABLE imports (
    id               BIGSERIAL PRIMARY KEY,
    campaign_id      BIGINT NOT NULL REFERENCES campaigns (id),
    source_name      TEXT NOT NULL,
    sha256           TEXT NOT NULL,
    rows_read        BIGINT NOT NULL,
    accepted         BIGINT NOT NULL,
    rejected         BIGINT NOT NULL,
    duplicates       BIGINT NOT NULL,
    email            BIGINT NOT NULL,
    postal           BIGINT NOT NULL,
    shared_addresses BIGINT NOT NULL,
    actor            TEXT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    finished_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT imports_reconcile CHECK (rows_read = accepted + rejected + duplicates AND accepted = email + postal)
);
CREATE INDEX imports_campaign ON imports (campaign_id, id);
CREATE TRIGGER imports_append_only BEFORE UPDATE OR DELETE ON imports
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();
