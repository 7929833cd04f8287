-- The wave plan of each campaign: who may be sent when. Membership is a key range of recipient ids,
-- fixed when a wave is released: (first_id, last_id]; the last wave ("rest") is open-ended, so
-- recipients added later join it (or the next wave not yet released).
CREATE TABLE waves (
    campaign_id       BIGINT NOT NULL REFERENCES campaigns (id),
    number            INTEGER NOT NULL CHECK (number >= 1),
    size_spec         TEXT NOT NULL,
    release_rule      TEXT NOT NULL DEFAULT 'auto' CHECK (release_rule IN ('auto', 'manual')),
    hold_minutes      INTEGER NOT NULL DEFAULT 0,
    max_failure_rate  DOUBLE PRECISION,
    max_deferral_rate DOUBLE PRECISION,
    -- Operators release a manual wave with: UPDATE waves SET released_at = now() WHERE …
    released_at       TIMESTAMPTZ,
    first_id          BIGINT,
    last_id           BIGINT,
    planned           BIGINT,
    finished_at       TIMESTAMPTZ,
    PRIMARY KEY (campaign_id, number)
);
CREATE TRIGGER waves_no_delete BEFORE DELETE ON waves FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();

-- Per wave: its rule, when it was released and finished, and its recipients by status. Counting a
-- wave's key range costs in proportion to the wave; campaign_progress stays O(1).
CREATE VIEW wave_progress AS
SELECT w.campaign_id, w.number, w.size_spec, w.release_rule, w.released_at, w.finished_at, w.planned,
       CASE WHEN w.finished_at IS NOT NULL THEN 'finished'
            WHEN w.released_at IS NOT NULL THEN 'sending' ELSE 'waiting' END AS state,
       count(r.id) AS total,
       count(r.id) FILTER (WHERE r.status = 'queued') AS queued,
       count(r.id) FILTER (WHERE r.status = 'deferred') AS deferred,
       count(r.id) FILTER (WHERE r.status = 'sent') AS sent,
       count(r.id) FILTER (WHERE r.status = 'failed') AS failed,
       count(r.id) FILTER (WHERE r.status = 'cancelled') AS cancelled
FROM waves w
LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
     AND w.first_id IS NOT NULL AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
GROUP BY w.campaign_id, w.number;
