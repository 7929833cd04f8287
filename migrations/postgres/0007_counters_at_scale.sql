-- What a campaign of 15,000,000 recipients needs so that no read the daemon or an operator makes every
-- few seconds costs in proportion to the campaign (docs/benchmarks.md, "Scale run"):
--
-- * recipient_samples: the first recipient of every (locale, jurisdiction) pair of a campaign, kept as
--   rows arrive. The pre-flight check (at `campaign start` and whenever a daemon takes a campaign up)
--   renders the notice for each pair; it found them with a GROUP BY over the campaign, 17 s at
--   15,000,000 recipients.
-- * wave_counters: recipients per status for each released wave, kept as campaign_counters is. The
--   wave_progress view and the "is the wave finished" check counted the wave's key range on every read
--   (the whole campaign for an open-ended wave).
--
-- Both are kept by statement triggers over the rows each statement inserted or changed, in the same
-- transaction, so they are exactly as current as the rows themselves.

CREATE TABLE recipient_samples (
    campaign_id  BIGINT NOT NULL,
    locale       TEXT,
    jurisdiction TEXT,
    recipient_id BIGINT NOT NULL
);
-- One sample per pair; NULL is a value of its own here (no locale is a pair like any other). An
-- expression key because UNIQUE NULLS NOT DISTINCT needs PostgreSQL 15 (docs/deploy.md: 13 or later).
CREATE UNIQUE INDEX recipient_samples_pair
    ON recipient_samples (campaign_id, coalesce(locale, ''), coalesce(jurisdiction, ''));

CREATE FUNCTION bn_samples_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- A hash aggregate over the statement's rows (an import batch: 10,000), then a probe per pair.
    INSERT INTO recipient_samples (campaign_id, locale, jurisdiction, recipient_id)
    SELECT campaign_id, locale, jurisdiction, min(id) FROM new_rows GROUP BY 1, 2, 3
    ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_samples_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bn_samples_after_insert();

INSERT INTO recipient_samples (campaign_id, locale, jurisdiction, recipient_id)
SELECT campaign_id, locale, jurisdiction, min(id) FROM recipients GROUP BY 1, 2, 3;

-- Email recipients per status of each released wave. A wave's row is made when it is released
-- (counting its key range once, or for the open-ended last wave by subtracting the other waves from
-- the campaign's counters: see the store's release_wave), under a lock on the campaign's
-- campaign_counters row that every insert and status change of the campaign also takes, so no change
-- falls between the count and the triggers below.
CREATE TABLE wave_counters (
    campaign_id BIGINT NOT NULL,
    wave_number INTEGER NOT NULL,
    total       BIGINT NOT NULL DEFAULT 0,
    queued      BIGINT NOT NULL DEFAULT 0,
    deferred    BIGINT NOT NULL DEFAULT 0,
    sent        BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    cancelled   BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, wave_number),
    FOREIGN KEY (campaign_id, wave_number) REFERENCES waves (campaign_id, number)
);

-- The wave of each changed email recipient, found by key range among the campaign's released waves
-- (a handful of rows), counted as the campaign's counters are: old rows minus, new rows plus, summed.
CREATE FUNCTION bn_wave_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changes AS (
        SELECT campaign_id, id, status, 1 AS sign FROM new_rows WHERE channel = 'email'
        UNION ALL
        SELECT campaign_id, id, status, -1 FROM old_rows WHERE channel = 'email'
    ), delta AS (
        SELECT w.campaign_id, w.number,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'queued'), 0) AS queued,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'deferred'), 0) AS deferred,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'sent'), 0) AS sent,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'failed'), 0) AS failed,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'cancelled'), 0) AS cancelled
        FROM changes c JOIN waves w ON w.campaign_id = c.campaign_id AND w.first_id IS NOT NULL
             AND c.id > w.first_id AND (w.last_id IS NULL OR c.id <= w.last_id)
        GROUP BY 1, 2
    )
    UPDATE wave_counters k SET
        queued = k.queued + d.queued, deferred = k.deferred + d.deferred, sent = k.sent + d.sent,
        failed = k.failed + d.failed, cancelled = k.cancelled + d.cancelled
    FROM delta d
    WHERE k.campaign_id = d.campaign_id AND k.wave_number = d.number
      AND (d.queued, d.deferred, d.sent, d.failed, d.cancelled) <> (0, 0, 0, 0, 0);
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_wave_counters_update AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bn_wave_counters_after_update();

-- Recipients imported into a campaign whose open-ended wave is already released join that wave.
CREATE FUNCTION bn_wave_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH delta AS (
        SELECT w.campaign_id, w.number, count(*) AS total,
               count(*) FILTER (WHERE n.status = 'queued') AS queued,
               count(*) FILTER (WHERE n.status = 'deferred') AS deferred,
               count(*) FILTER (WHERE n.status = 'sent') AS sent,
               count(*) FILTER (WHERE n.status = 'failed') AS failed,
               count(*) FILTER (WHERE n.status = 'cancelled') AS cancelled
        FROM new_rows n JOIN waves w ON w.campaign_id = n.campaign_id AND w.first_id IS NOT NULL
             AND n.id > w.first_id AND (w.last_id IS NULL OR n.id <= w.last_id)
        WHERE n.channel = 'email'
        GROUP BY 1, 2
    )
    UPDATE wave_counters k SET
        total = k.total + d.total, queued = k.queued + d.queued, deferred = k.deferred + d.deferred,
        sent = k.sent + d.sent, failed = k.failed + d.failed, cancelled = k.cancelled + d.cancelled
    FROM delta d
    WHERE k.campaign_id = d.campaign_id AND k.wave_number = d.number;
    RETURN NULL;
END $$;
CREATE TRIGGER recipients_wave_counters_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bn_wave_counters_after_insert();

-- Waves released before this migration (an upgrade in the middle of a campaign): counted once.
INSERT INTO wave_counters (campaign_id, wave_number, total, queued, deferred, sent, failed, cancelled)
SELECT w.campaign_id, w.number, count(r.id),
       count(r.id) FILTER (WHERE r.status = 'queued'), count(r.id) FILTER (WHERE r.status = 'deferred'),
       count(r.id) FILTER (WHERE r.status = 'sent'), count(r.id) FILTER (WHERE r.status = 'failed'),
       count(r.id) FILTER (WHERE r.status = 'cancelled')
FROM waves w
LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
     AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
WHERE w.first_id IS NOT NULL
GROUP BY w.campaign_id, w.number;

-- Wave progress from the counters: O(waves), whatever the campaign's size.
DROP VIEW wave_progress;
CREATE VIEW wave_progress AS
SELECT p.*,
       bn_eta_seconds(p.queued + p.deferred, p.sent_last_minute, p.sent_last_hour) AS eta_seconds
FROM (
    SELECT w.campaign_id, w.number, w.size_spec, w.release_rule, w.released_at, w.finished_at, w.planned,
           CASE WHEN w.finished_at IS NOT NULL THEN 'finished'
                WHEN w.released_at IS NOT NULL THEN 'sending' ELSE 'waiting' END AS state,
           coalesce(k.total, 0) AS total, coalesce(k.queued, 0) AS queued,
           coalesce(k.deferred, 0) AS deferred, coalesce(k.sent, 0) AS sent,
           coalesce(k.failed, 0) AS failed, coalesce(k.cancelled, 0) AS cancelled,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= bn_rate_window_end() - 60 AND b.bucket < bn_rate_window_end()) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= bn_rate_window_end() - 3600 AND b.bucket < bn_rate_window_end()) AS sent_last_hour,
           greatest(w.released_at, w.finished_at,
                    (SELECT b.last_at FROM send_buckets b
                     WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
                     ORDER BY b.bucket DESC LIMIT 1)) AS last_change_at
    FROM waves w
    LEFT JOIN wave_counters k ON k.campaign_id = w.campaign_id AND k.wave_number = w.number
) p;
