-- The references of the two tables that grow by one row per recipient and per attempt, checked once per
-- statement instead of once per row.
--
-- A foreign key is checked by a row trigger that looks the parent up and locks it (FOR KEY SHARE):
-- measured on 1,000,000 imported rows, the key from recipients to campaigns alone cost 3.8 s, more than
-- half of what `psql \copy` takes to load the same rows (docs/benchmarks.md). Both tables already have
-- a statement trigger reading the rows just inserted (the counters, the send buckets); the same
-- triggers now check the references, set-based, and refuse a bad row with the foreign-key error code
-- (23503), so callers and operators see what they saw before.
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

CREATE OR REPLACE FUNCTION bn_count_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    -- Every attempt names an existing recipient, and that recipient's campaign.
    SELECT n.recipient_id, n.campaign_id INTO bad
    FROM new_attempts n LEFT JOIN recipients r ON r.id = n.recipient_id
    WHERE r.campaign_id IS DISTINCT FROM n.campaign_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'insert on table "delivery_attempts" violates foreign key to recipients: no recipient % in campaign %',
            bad.recipient_id, bad.campaign_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    -- Ordered, so that concurrent daemons lock buckets in the same order and never deadlock.
    INSERT INTO send_buckets AS b (campaign_id, bucket, wave_number, attempts, sent, failed, last_at)
    SELECT n.campaign_id, floor(extract(epoch FROM n.finished_at) / 10)::bigint * 10, coalesce(w.number, 0),
           count(*), count(*) FILTER (WHERE n.outcome = 'sent'),
           count(*) FILTER (WHERE n.outcome = 'permanent'), max(n.finished_at)
    FROM new_attempts n
    LEFT JOIN waves w ON w.campaign_id = n.campaign_id AND w.first_id IS NOT NULL
         AND n.recipient_id > w.first_id AND (w.last_id IS NULL OR n.recipient_id <= w.last_id)
    GROUP BY 1, 2, 3
    ORDER BY 1, 2, 3
    ON CONFLICT (campaign_id, bucket, wave_number) DO UPDATE
       SET attempts = b.attempts + excluded.attempts, sent = b.sent + excluded.sent,
           failed = b.failed + excluded.failed, last_at = greatest(b.last_at, excluded.last_at);
    RETURN NULL;
END $$;
