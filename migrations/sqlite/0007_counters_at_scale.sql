-- Samples per (locale, jurisdiction) and counters per released wave, kept as rows arrive and change,
-- so that pre-flight and wave progress never count the campaign (see the PostgreSQL dialect). Row
-- triggers here, as for campaign_counters.

CREATE TABLE recipient_samples (
    campaign_id  INTEGER NOT NULL,
    locale       TEXT,
    jurisdiction TEXT,
    recipient_id INTEGER NOT NULL
);
-- An expression key: a plain UNIQUE would let every row without a locale in (SQLite's NULLs differ).
CREATE UNIQUE INDEX recipient_samples_pair
    ON recipient_samples (campaign_id, coalesce(locale, ''), coalesce(jurisdiction, ''));

CREATE TRIGGER recipients_samples_insert AFTER INSERT ON recipients BEGIN
    INSERT OR IGNORE INTO recipient_samples (campaign_id, locale, jurisdiction, recipient_id)
    VALUES (NEW.campaign_id, NEW.locale, NEW.jurisdiction, NEW.id);
END;

INSERT OR IGNORE INTO recipient_samples (campaign_id, locale, jurisdiction, recipient_id)
SELECT campaign_id, locale, jurisdiction, min(id) FROM recipients GROUP BY 1, 2, 3;

CREATE TABLE wave_counters (
    campaign_id INTEGER NOT NULL,
    wave_number INTEGER NOT NULL,
    total       INTEGER NOT NULL DEFAULT 0,
    queued      INTEGER NOT NULL DEFAULT 0,
    deferred    INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, wave_number),
    FOREIGN KEY (campaign_id, wave_number) REFERENCES waves (campaign_id, number)
);

CREATE TRIGGER recipients_wave_counters_insert AFTER INSERT ON recipients
WHEN NEW.channel = 'email' BEGIN
    UPDATE wave_counters SET
        total = total + 1, queued = queued + (NEW.status = 'queued'),
        deferred = deferred + (NEW.status = 'deferred'), sent = sent + (NEW.status = 'sent'),
        failed = failed + (NEW.status = 'failed'), cancelled = cancelled + (NEW.status = 'cancelled')
    WHERE campaign_id = NEW.campaign_id
      AND wave_number = (SELECT w.number FROM waves w
                         WHERE w.campaign_id = NEW.campaign_id AND w.first_id IS NOT NULL
                           AND NEW.id > w.first_id AND (w.last_id IS NULL OR NEW.id <= w.last_id));
END;

CREATE TRIGGER recipients_wave_counters_update AFTER UPDATE OF status ON recipients
WHEN NEW.status IS NOT OLD.status AND NEW.channel = 'email' BEGIN
    UPDATE wave_counters SET
        queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued'),
        deferred = deferred + (NEW.status = 'deferred') - (OLD.status = 'deferred'),
        sent = sent + (NEW.status = 'sent') - (OLD.status = 'sent'),
        failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled')
    WHERE campaign_id = NEW.campaign_id
      AND wave_number = (SELECT w.number FROM waves w
                         WHERE w.campaign_id = NEW.campaign_id AND w.first_id IS NOT NULL
                           AND NEW.id > w.first_id AND (w.last_id IS NULL OR NEW.id <= w.last_id));
END;

-- Waves released before this migration: counted once.
INSERT INTO wave_counters (campaign_id, wave_number, total, queued, deferred, sent, failed, cancelled)
SELECT w.campaign_id, w.number, count(r.id), coalesce(sum(r.status = 'queued'), 0),
       coalesce(sum(r.status = 'deferred'), 0), coalesce(sum(r.status = 'sent'), 0),
       coalesce(sum(r.status = 'failed'), 0), coalesce(sum(r.status = 'cancelled'), 0)
FROM waves w
LEFT JOIN recipients r ON r.campaign_id = w.campaign_id AND r.channel = 'email'
     AND r.id > w.first_id AND (w.last_id IS NULL OR r.id <= w.last_id)
WHERE w.first_id IS NOT NULL
GROUP BY w.campaign_id, w.number;

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
           coalesce(k.total, 0) AS total, coalesce(k.queued, 0) AS queued,
           coalesce(k.deferred, 0) AS deferred, coalesce(k.sent, 0) AS sent,
           coalesce(k.failed, 0) AS failed, coalesce(k.cancelled, 0) AS cancelled,
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
    LEFT JOIN wave_counters k ON k.campaign_id = w.campaign_id AND k.wave_number = w.number
) p;
