-- The wave plan of each campaign (see the PostgreSQL dialect).
CREATE TABLE waves (
    campaign_id       INTEGER NOT NULL REFERENCES campaigns (id),
    number            INTEGER NOT NULL CHECK (number >= 1),
    size_spec         TEXT NOT NULL,
    release_rule      TEXT NOT NULL DEFAULT 'auto' CHECK (release_rule IN ('auto', 'manual')),
    hold_minutes      INTEGER NOT NULL DEFAULT 0,
    max_failure_rate  REAL,
    max_deferral_rate REAL,
    released_at       INTEGER,
    first_id          INTEGER,
    last_id           INTEGER,
    planned           INTEGER,
    finished_at       INTEGER,
    PRIMARY KEY (campaign_id, number)
);
CREATE TRIGGER waves_no_delete BEFORE DELETE ON waves BEGIN
    SELECT RAISE(ABORT, 'DELETE on waves is not allowed: this table is an append-only record');
END;

CREATE VIEW wave_progress AS
SELECT w.campaign_id, w.number, w.size_spec, w.release_rule, w.released_at, w.finished_at, w.planned,
       CASE WHEN w.finished_at IS NOT NULL THEN 'finished'
            WHEN w.released_at IS NOT NULL THEN 'sending' ELSE 'waiting' END AS state,
       count(r.id) AS total,
       coalesce(sum(r.status = 'queued'), 0) AS queued,
       coalesce(sum(r.status = 'deferred'), 0) AS deferred,
       coalesce(sum(r.status = 'sent'), 0) AS sent,
       coalesce(sum(r.status = 'failed'), 0) AS failed,
       coalesce(sum(r.status = 'cancelled'), 0) AS cancelled
FROM waves w
LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
     AND w.first_id IS NOT NULL AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
GROUP BY w.campaign_id, w.number;
