-- Send rates without counting the queue or the attempt log (see the PostgreSQL dialect): attempts per
-- campaign, wave and 10-second bucket, kept by a row trigger on delivery_attempts. Times are
-- milliseconds since the Unix epoch, as everywhere in this dialect; buckets are in seconds.
CREATE TABLE send_buckets (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    bucket      INTEGER NOT NULL,
    wave_number INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, bucket, wave_number)
);

CREATE TRIGGER delivery_attempts_count AFTER INSERT ON delivery_attempts BEGIN
    INSERT INTO send_buckets (campaign_id, bucket, wave_number, attempts, sent, failed, last_at)
    VALUES (NEW.campaign_id, NEW.finished_at / 10000 * 10,
            coalesce((SELECT w.number FROM waves w
                      WHERE w.campaign_id = NEW.campaign_id AND w.first_id IS NOT NULL
                        AND NEW.recipient_id > w.first_id
                        AND (w.last_id IS NULL OR NEW.recipient_id <= w.last_id)), 0),
            1, NEW.outcome = 'sent', NEW.outcome = 'permanent', NEW.finished_at)
    ON CONFLICT (campaign_id, bucket, wave_number) DO UPDATE
       SET attempts = attempts + 1, sent = sent + excluded.sent, failed = failed + excluded.failed,
           last_at = max(last_at, excluded.last_at);
END;

-- Attempts made before this migration.
INSERT INTO send_buckets (campaign_id, bucket, wave_number, attempts, sent, failed, last_at)
SELECT n.campaign_id, n.finished_at / 10000 * 10,
       coalesce((SELECT w.number FROM waves w
                 WHERE w.campaign_id = n.campaign_id AND w.first_id IS NOT NULL
                   AND n.recipient_id > w.first_id
                   AND (w.last_id IS NULL OR n.recipient_id <= w.last_id)), 0) AS wave_number,
       count(*), sum(n.outcome = 'sent'), sum(n.outcome = 'permanent'), max(n.finished_at)
FROM delivery_attempts n
GROUP BY 1, 2, 3;

-- The end of the rate window: the start of the current 10-second bucket, in seconds.
CREATE VIEW bn_now AS
SELECT CAST(strftime('%s', 'now') AS INTEGER) / 10 * 10 AS window_end;

DROP VIEW campaign_progress;
CREATE VIEW campaign_progress AS
SELECT p.*,
       CASE WHEN p.queued + p.deferred = 0 THEN NULL
            WHEN p.sent_last_minute > 0
                THEN ((p.queued + p.deferred) * 60 + p.sent_last_minute - 1) / p.sent_last_minute
            WHEN p.sent_last_hour > 0
                THEN ((p.queued + p.deferred) * 3600 + p.sent_last_hour - 1) / p.sent_last_hour
       END AS eta_seconds
FROM (
    SELECT c.id AS campaign_id, c.name, c.state, k.total, k.queued, k.deferred, k.sent, k.failed,
           k.cancelled, k.postal, k.updated_at AS last_change_at,
           strftime('%Y-%m-%dT%H:%M:%fZ', k.updated_at / 1000.0, 'unixepoch') AS last_change_utc,
           (SELECT coalesce(sum(b.sent), 0) FROM send_buckets b, bn_now t
            WHERE b.campaign_id = c.id AND b.bucket >= t.window_end - 60
              AND b.bucket < t.window_end) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0) FROM send_buckets b, bn_now t
            WHERE b.campaign_id = c.id AND b.bucket >= t.window_end - 3600
              AND b.bucket < t.window_end) AS sent_last_hour
    FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id
) p;

DROP VIEW wave_progress;
CREATE VIEW wave_progress AS
SELECT p.*,
       CASE WHEN p.queued + p.deferred = 0 THEN NULL
            WHEN p.sent_last_minute > 0
                THEN ((p.queued + p.deferred) * 60 + p.sent_last_minute - 1) / p.sent_last_minute
            WHEN p.sent_last_hour > 0
                THEN ((p.queued + p.deferred) * 3600 + p.sent_last_hour - 1) / p.sent_last_hour
       END AS eta_seconds
FROM (
    SELECT w.campaign_id, w.number, w.size_spec, w.release_rule, w.released_at, w.finished_at, w.planned,
           CASE WHEN w.finished_at IS NOT NULL THEN 'finished'
                WHEN w.released_at IS NOT NULL THEN 'sending' ELSE 'waiting' END AS state,
           count(r.id) AS total,
           coalesce(sum(r.status = 'queued'), 0) AS queued,
           coalesce(sum(r.status = 'deferred'), 0) AS deferred,
           coalesce(sum(r.status = 'sent'), 0) AS sent,
           coalesce(sum(r.status = 'failed'), 0) AS failed,
           coalesce(sum(r.status = 'cancelled'), 0) AS cancelled,
           (SELECT coalesce(sum(b.sent), 0) FROM send_buckets b, bn_now t
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= t.window_end - 60 AND b.bucket < t.window_end) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0) FROM send_buckets b, bn_now t
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= t.window_end - 3600 AND b.bucket < t.window_end) AS sent_last_hour,
           nullif(max(coalesce(w.released_at, 0), coalesce(w.finished_at, 0),
                      coalesce((SELECT b.last_at FROM send_buckets b
                                WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
                                ORDER BY b.bucket DESC LIMIT 1), 0)), 0) AS last_change_at
    FROM waves w
    LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
         AND w.first_id IS NOT NULL AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
    GROUP BY w.campaign_id, w.number
) p;
