-- Deadlines per campaign and jurisdiction: see the PostgreSQL migration of the same number for what
-- each part is for. Row triggers here, as for campaign_counters and wave_counters.

CREATE TABLE jurisdiction_counters (
    campaign_id  INTEGER NOT NULL REFERENCES campaigns (id),
    -- '' for recipients without a jurisdiction (the view shows NULL again).
    jurisdiction TEXT NOT NULL,
    total        INTEGER NOT NULL DEFAULT 0,
    queued       INTEGER NOT NULL DEFAULT 0,
    deferred     INTEGER NOT NULL DEFAULT 0,
    sent         INTEGER NOT NULL DEFAULT 0,
    failed       INTEGER NOT NULL DEFAULT 0,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    postal       INTEGER NOT NULL DEFAULT 0,
    bounced      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, jurisdiction)
);

CREATE TRIGGER recipients_jurisdiction_counters_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO jurisdiction_counters
        (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''), 1, NEW.status = 'queued',
            NEW.status = 'deferred', NEW.status = 'sent', NEW.status = 'failed',
            NEW.status = 'cancelled', NEW.status = 'postal', NEW.status = 'bounced')
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        total = total + 1, queued = queued + excluded.queued, deferred = deferred + excluded.deferred,
        sent = sent + excluded.sent, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, postal = postal + excluded.postal,
        bounced = bounced + excluded.bounced;
END;

-- A status change, or a jurisdiction corrected with SQL: the old row's counts leave its pair, the new
-- row's join its own (which may be new).
CREATE TRIGGER recipients_jurisdiction_counters_update AFTER UPDATE OF status, jurisdiction ON recipients
WHEN NEW.status IS NOT OLD.status OR NEW.jurisdiction IS NOT OLD.jurisdiction BEGIN
    UPDATE jurisdiction_counters SET
        total = total - 1,
        queued = queued - (OLD.status = 'queued'), deferred = deferred - (OLD.status = 'deferred'),
        sent = sent - (OLD.status = 'sent'), failed = failed - (OLD.status = 'failed'),
        cancelled = cancelled - (OLD.status = 'cancelled'), postal = postal - (OLD.status = 'postal'),
        bounced = bounced - (OLD.status = 'bounced')
    WHERE campaign_id = OLD.campaign_id AND jurisdiction = coalesce(OLD.jurisdiction, '');
    INSERT INTO jurisdiction_counters
        (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''), 1, NEW.status = 'queued',
            NEW.status = 'deferred', NEW.status = 'sent', NEW.status = 'failed',
            NEW.status = 'cancelled', NEW.status = 'postal', NEW.status = 'bounced')
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        total = total + 1, queued = queued + excluded.queued, deferred = deferred + excluded.deferred,
        sent = sent + excluded.sent, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, postal = postal + excluded.postal,
        bounced = bounced + excluded.bounced;
END;

INSERT INTO jurisdiction_counters
    (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced)
SELECT campaign_id, coalesce(jurisdiction, ''), count(*),
       sum(status = 'queued'), sum(status = 'deferred'), sum(status = 'sent'), sum(status = 'failed'),
       sum(status = 'cancelled'), sum(status = 'postal'), sum(status = 'bounced')
FROM recipients GROUP BY 1, 2;

CREATE TABLE campaign_deadlines (
    campaign_id  INTEGER NOT NULL REFERENCES campaigns (id),
    jurisdiction TEXT NOT NULL,
    -- YYYY-MM-DD, as discovered_at.
    deadline     TEXT NOT NULL,
    basis        TEXT NOT NULL CHECK (basis IN ('law', 'internal_target')),
    days         INTEGER NOT NULL,
    law_text     TEXT,
    computed_at  INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, jurisdiction)
);

CREATE VIEW jurisdiction_progress AS
SELECT q.*,
       CASE WHEN q.eta_seconds IS NOT NULL
            THEN date(CAST(strftime('%s', 'now') AS INTEGER) + q.eta_seconds, 'unixepoch')
       END AS projected_completion
FROM (
    SELECT k.campaign_id, nullif(k.jurisdiction, '') AS jurisdiction, k.total AS residents,
           k.sent AS notified_email, k.bounced, k.postal + k.bounced AS postal_pending,
           k.queued, k.deferred, k.failed, k.cancelled, k.postal,
           d.deadline, d.basis, d.days AS deadline_days, d.law_text,
           CAST(julianday(d.deadline) - julianday(date('now')) AS INTEGER) AS days_left,
           CASE WHEN k.queued + k.deferred = 0 THEN NULL
                WHEN p.sent_last_minute > 0
                    THEN ((k.queued + k.deferred) * 60 + p.sent_last_minute - 1) / p.sent_last_minute
                WHEN p.sent_last_hour > 0
                    THEN ((k.queued + k.deferred) * 3600 + p.sent_last_hour - 1) / p.sent_last_hour
           END AS eta_seconds
    FROM jurisdiction_counters k
    JOIN campaign_progress p ON p.campaign_id = k.campaign_id
    LEFT JOIN campaign_deadlines d ON d.campaign_id = k.campaign_id AND d.jurisdiction = k.jurisdiction
) q;
