-- Send rates without counting the queue or the attempt log: attempts per campaign, wave and 10-second
-- bucket, kept by a statement trigger on delivery_attempts. The progress views read at most an hour of
-- buckets (360 per wave), so "sent in the last minute / hour" and the ETA stay cheap at any queue size.
-- The last minute is the 60 s that end where the current bucket begins, so it lags by up to 10 s.
CREATE TABLE send_buckets (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    -- Start of the bucket, in seconds since the Unix epoch (UTC), a multiple of 10.
    bucket      BIGINT NOT NULL,
    -- The wave of the recipients attempted (0: the recipient is in no wave).
    wave_number INTEGER NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    sent        BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    last_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (campaign_id, bucket, wave_number)
);

CREATE FUNCTION bn_count_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
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
CREATE TRIGGER delivery_attempts_count AFTER INSERT ON delivery_attempts
    REFERENCING NEW TABLE AS new_attempts FOR EACH STATEMENT EXECUTE FUNCTION bn_count_attempts();

-- Attempts made before this migration (an upgrade in the middle of a campaign).
INSERT INTO send_buckets (campaign_id, bucket, wave_number, attempts, sent, failed, last_at)
SELECT n.campaign_id, floor(extract(epoch FROM n.finished_at) / 10)::bigint * 10, coalesce(w.number, 0),
       count(*), count(*) FILTER (WHERE n.outcome = 'sent'),
       count(*) FILTER (WHERE n.outcome = 'permanent'), max(n.finished_at)
FROM delivery_attempts n
LEFT JOIN waves w ON w.campaign_id = n.campaign_id AND w.first_id IS NOT NULL
     AND n.recipient_id > w.first_id AND (w.last_id IS NULL OR n.recipient_id <= w.last_id)
GROUP BY 1, 2, 3;

-- The end of the rate window: the start of the current 10-second bucket.
CREATE FUNCTION bn_rate_window_end() RETURNS BIGINT LANGUAGE sql STABLE AS $$
    SELECT floor(extract(epoch FROM now()) / 10)::bigint * 10
$$;

-- Seconds until `open` recipients are attempted at the last minute's rate (the last hour's when the
-- last minute was quiet), rounded up; NULL when nothing is open or nothing is moving.
CREATE FUNCTION bn_eta_seconds(open BIGINT, last_minute BIGINT, last_hour BIGINT) RETURNS BIGINT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN open = 0 THEN NULL
                WHEN last_minute > 0 THEN (open * 60 + last_minute - 1) / last_minute
                WHEN last_hour > 0 THEN (open * 3600 + last_hour - 1) / last_hour
           END
$$;

-- Campaign progress (O(1) counters) with the send rate over the last minute and hour and the ETA:
-- seconds until every open recipient is attempted at the last minute's rate (the last hour's when the
-- last minute was quiet).
DROP VIEW campaign_progress;
CREATE VIEW campaign_progress AS
SELECT p.*,
       bn_eta_seconds(p.queued + p.deferred, p.sent_last_minute, p.sent_last_hour) AS eta_seconds
FROM (
    SELECT c.id AS campaign_id, c.name, c.state, k.total, k.queued, k.deferred, k.sent, k.failed,
           k.cancelled, k.postal, k.updated_at AS last_change_at,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = c.id AND b.bucket >= bn_rate_window_end() - 60
              AND b.bucket < bn_rate_window_end()) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = c.id AND b.bucket >= bn_rate_window_end() - 3600
              AND b.bucket < bn_rate_window_end()) AS sent_last_hour
    FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id
) p;

-- Wave progress with the same rates and ETA per wave, and the time of its last change (released,
-- an attempt, finished).
DROP VIEW wave_progress;
CREATE VIEW wave_progress AS
SELECT p.*,
       bn_eta_seconds(p.queued + p.deferred, p.sent_last_minute, p.sent_last_hour) AS eta_seconds
FROM (
    SELECT w.campaign_id, w.number, w.size_spec, w.release_rule, w.released_at, w.finished_at, w.planned,
           CASE WHEN w.finished_at IS NOT NULL THEN 'finished'
                WHEN w.released_at IS NOT NULL THEN 'sending' ELSE 'waiting' END AS state,
           count(r.id) AS total,
           count(r.id) FILTER (WHERE r.status = 'queued') AS queued,
           count(r.id) FILTER (WHERE r.status = 'deferred') AS deferred,
           count(r.id) FILTER (WHERE r.status = 'sent') AS sent,
           count(r.id) FILTER (WHERE r.status = 'failed') AS failed,
           count(r.id) FILTER (WHERE r.status = 'cancelled') AS cancelled,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= bn_rate_window_end() - 60 AND b.bucket < bn_rate_window_end()) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
              AND b.bucket >= bn_rate_window_end() - 3600 AND b.bucket < bn_rate_window_end()) AS sent_last_hour,
           -- The newest bucket holds the latest attempt: read backwards along the key, stop at the first.
           greatest(w.released_at, w.finished_at,
                    (SELECT b.last_at FROM send_buckets b
                     WHERE b.campaign_id = w.campaign_id AND b.wave_number = w.number
                     ORDER BY b.bucket DESC LIMIT 1)) AS last_change_at
    FROM waves w
    LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
         AND w.first_id IS NOT NULL AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
    GROUP BY w.campaign_id, w.number
) p;
