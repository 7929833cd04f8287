-- Deadlines per campaign and jurisdiction (issue 16, docs/deadlines.md): how many residents of each
-- jurisdiction a campaign has, how many were notified, and the day each jurisdiction's notice is due,
-- readable at 15,000,000 recipients without counting them.
--
-- * jurisdiction_counters: recipients per status for each (campaign, jurisdiction), kept by statement
--   triggers over the rows each statement inserted or changed, in the same transaction, exactly as
--   campaign_counters (0001, 0009) and wave_counters (0007) are. A recipient without a jurisdiction
--   counts under '' (a key column cannot be NULL; the view shows NULL again).
-- * campaign_deadlines: each jurisdiction's deadline, computed by the application from the rules
--   (rules/jurisdictions.toml and rules.file) and the campaign's discovery date, when the campaign is
--   created or started and after each import (the rules are data the database does not have).
-- * jurisdiction_progress: both, with the campaign's send rate, per campaign and jurisdiction.

CREATE TABLE jurisdiction_counters (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id),
    jurisdiction TEXT NOT NULL,
    total        BIGINT NOT NULL DEFAULT 0,
    queued       BIGINT NOT NULL DEFAULT 0,
    deferred     BIGINT NOT NULL DEFAULT 0,
    sent         BIGINT NOT NULL DEFAULT 0,
    failed       BIGINT NOT NULL DEFAULT 0,
    cancelled    BIGINT NOT NULL DEFAULT 0,
    postal       BIGINT NOT NULL DEFAULT 0,
    bounced      BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, jurisdiction)
);

-- One upsert per (campaign, jurisdiction) the statement touched (an import batch: a hash aggregate
-- over 10,000 rows, then a probe per pair). These triggers sort after recipients_counters_* by name,
-- and PostgreSQL fires a table's triggers in name order, so every writer takes the campaign's
-- campaign_counters row first: the per-jurisdiction rows cannot deadlock behind it.
CREATE FUNCTION bn_jurisdiction_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jurisdiction_counters AS k
        (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced)
    SELECT campaign_id, coalesce(jurisdiction, ''), count(*),
           count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'deferred'),
           count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'cancelled'), count(*) FILTER (WHERE status = 'postal'),
           count(*) FILTER (WHERE status = 'bounced')
    FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        total = k.total + EXCLUDED.total, queued = k.queued + EXCLUDED.queued,
        deferred = k.deferred + EXCLUDED.deferred, sent = k.sent + EXCLUDED.sent,
        failed = k.failed + EXCLUDED.failed, cancelled = k.cancelled + EXCLUDED.cancelled,
        postal = k.postal + EXCLUDED.postal, bounced = k.bounced + EXCLUDED.bounced;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_jurisdiction_counters_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bn_jurisdiction_counters_after_insert();

-- Old rows minus, new rows plus, never joined (as bn_counters_after_update). An UPDATE of the pairs'
-- rows, not an upsert: this fires on every update of the queue (claims, leases, results), most of
-- which change no count, and INSERT ... ON CONFLICT cost several times as much per statement there
-- (a quick measurement on a loaded development machine: about 0.15 ms against 0.03 ms per single-row
-- update; with the upsert the cluster rate tests fell short of their limit). The total moves too, so that an
-- operator who corrects a recipient's jurisdiction with SQL moves the person between rows.
CREATE FUNCTION bn_jurisdiction_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changes AS (
        SELECT campaign_id, coalesce(jurisdiction, '') AS jurisdiction, status, 1 AS sign FROM new_rows
        UNION ALL
        SELECT campaign_id, coalesce(jurisdiction, ''), status, -1 FROM old_rows
    ), delta AS (
        SELECT campaign_id, jurisdiction, sum(sign) AS total,
               coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
               coalesce(sum(sign) FILTER (WHERE status = 'deferred'), 0) AS deferred,
               coalesce(sum(sign) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
               coalesce(sum(sign) FILTER (WHERE status = 'postal'), 0) AS postal,
               coalesce(sum(sign) FILTER (WHERE status = 'bounced'), 0) AS bounced
        FROM changes GROUP BY 1, 2
    )
    UPDATE jurisdiction_counters k SET
        total = k.total + d.total, queued = k.queued + d.queued,
        deferred = k.deferred + d.deferred, sent = k.sent + d.sent,
        failed = k.failed + d.failed, cancelled = k.cancelled + d.cancelled,
        postal = k.postal + d.postal, bounced = k.bounced + d.bounced
    FROM delta d
    WHERE k.campaign_id = d.campaign_id AND k.jurisdiction = d.jurisdiction
      AND (d.total, d.queued, d.deferred, d.sent, d.failed, d.cancelled, d.postal, d.bounced)
          <> (0, 0, 0, 0, 0, 0, 0, 0);
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_jurisdiction_counters_update AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bn_jurisdiction_counters_after_update();

-- The pair a corrected jurisdiction moves a recipient into may not have a row yet: a row trigger
-- makes it (empty) first, since row triggers fire before statement triggers. Its column list and WHEN
-- are checked without calling a function, so the daemon's updates, which never set jurisdiction, pay
-- nothing for it.
CREATE FUNCTION bn_jurisdiction_counters_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jurisdiction_counters (campaign_id, jurisdiction)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, '')) ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_jurisdiction_counters_pair AFTER UPDATE OF jurisdiction ON recipients
    FOR EACH ROW WHEN (OLD.jurisdiction IS DISTINCT FROM NEW.jurisdiction)
    EXECUTE FUNCTION bn_jurisdiction_counters_row();

-- Campaigns already under way when this migration runs (an upgrade mid-campaign): counted once.
INSERT INTO jurisdiction_counters
    (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced)
SELECT campaign_id, coalesce(jurisdiction, ''), count(*),
       count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'deferred'),
       count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'cancelled'), count(*) FILTER (WHERE status = 'postal'),
       count(*) FILTER (WHERE status = 'bounced')
FROM recipients GROUP BY 1, 2;

-- Written by the application only (the rules are not in the database); replaced whole per campaign.
CREATE TABLE campaign_deadlines (
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id),
    -- As recipients carry it; '' for recipients without one.
    jurisdiction TEXT NOT NULL,
    -- The last day on time.
    deadline     DATE NOT NULL,
    -- 'law': the number of days the law sets; 'internal_target': the law sets none (or the code is not
    -- in the rules, or the recipient has none), so the configured internal target applies.
    basis        TEXT NOT NULL CHECK (basis IN ('law', 'internal_target')),
    days         INTEGER NOT NULL,
    -- The law's own words when it sets no number, or why the internal target applies.
    law_text     TEXT,
    computed_at  TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (campaign_id, jurisdiction)
);

-- Per campaign and jurisdiction: O(jurisdictions) rows of counters and deadlines, and the campaign's
-- rate from campaign_progress (send_buckets). The projection divides the jurisdiction's open email
-- recipients by the whole campaign's rate: a first projection (recipients are claimed in queue order,
-- not by jurisdiction), documented as such in docs/deadlines.md.
CREATE VIEW jurisdiction_progress AS
SELECT q.*,
       CASE WHEN q.eta_seconds IS NOT NULL
            THEN ((now() + q.eta_seconds * interval '1 second') AT TIME ZONE 'UTC')::date
       END AS projected_completion
FROM (
    SELECT k.campaign_id, nullif(k.jurisdiction, '') AS jurisdiction, k.total AS residents,
           k.sent AS notified_email, k.bounced, k.postal + k.bounced AS postal_pending,
           k.queued, k.deferred, k.failed, k.cancelled, k.postal,
           d.deadline, d.basis, d.days AS deadline_days, d.law_text,
           d.deadline - (now() AT TIME ZONE 'UTC')::date AS days_left,
           bn_eta_seconds(k.queued + k.deferred, p.sent_last_minute, p.sent_last_hour) AS eta_seconds
    FROM jurisdiction_counters k
    JOIN campaign_progress p ON p.campaign_id = k.campaign_id
    LEFT JOIN campaign_deadlines d ON d.campaign_id = k.campaign_id AND d.jurisdiction = k.jurisdiction
) q;
