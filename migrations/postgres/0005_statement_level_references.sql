-- The references of the two tables that grow by one row per recipient and per attempt, checked once per
-- statement instead of once per row.
--
-- A foreign key is checked by a row trigger that looks the parent up and locks it (FOR KEY SHARE):
-- measured on 1,000,000 imported rows, the key from recipients to campaigns alone cost 3.8 s, more than
-- half of what `psql \copy` takes to load the same rows (docs/benchmarks.md). The references are now
-- checked set-based by statement triggers over the rows just inserted (for recipients, inside the
-- counters trigger, whose counters update already finds each campaign), refusing a bad row with the
-- foreign-key error code (23503), so callers and operators see what they saw before.
--
-- What a foreign key also guards, a parent deleted under its children, cannot happen here: campaigns,
-- recipients and attempts refuse DELETE (bn_refuse_change), and a recipient's campaign_id cannot change
-- (recipients_identity_fixed). Every campaign has its campaign_counters row from the moment it is
-- created (campaigns_created), so "the campaign exists" is "its counters row exists".

ALTER TABLE recipients DROP CONSTRAINT recipients_campaign_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_recipient_id_fkey;
ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_campaign_id_fkey;

CREATE OR REPLACE FUNCTION bn_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    WITH delta AS (
        SELECT campaign_id, count(*) AS total,
               count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'deferred') AS deferred,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE status = 'postal') AS postal
        FROM new_rows GROUP BY campaign_id
    ), counted AS (
        UPDATE campaign_counters c SET
            total = c.total + d.total, queued = c.queued + d.queued, deferred = c.deferred + d.deferred,
            sent = c.sent + d.sent, failed = c.failed + d.failed, cancelled = c.cancelled + d.cancelled,
            postal = c.postal + d.postal, updated_at = now()
        FROM delta d WHERE c.campaign_id = d.campaign_id
        RETURNING c.campaign_id
    )
    SELECT d.campaign_id INTO missing FROM delta d
    WHERE NOT EXISTS (SELECT 1 FROM counted k WHERE k.campaign_id = d.campaign_id)
    ORDER BY d.campaign_id LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "recipients" violates foreign key to campaigns: campaign % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

-- Every attempt names an existing recipient, and that recipient's campaign. A trigger of its own beside
-- delivery_attempts_count (the send buckets, unchanged): PostgreSQL captures the inserted rows once
-- per statement for both.
CREATE FUNCTION bn_check_attempt_references() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT n.recipient_id, n.campaign_id INTO bad
    FROM new_attempts n LEFT JOIN recipients r ON r.id = n.recipient_id
    WHERE r.campaign_id IS DISTINCT FROM n.campaign_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert on table "delivery_attempts" violates foreign key to recipients: no recipient % in campaign %',
            bad.recipient_id, bad.campaign_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER delivery_attempts_references AFTER INSERT ON delivery_attempts
    REFERENCING NEW TABLE AS new_attempts FOR EACH STATEMENT EXECUTE FUNCTION bn_check_attempt_references();
