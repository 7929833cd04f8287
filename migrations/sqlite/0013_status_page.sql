-- What the status page reads: see the PostgreSQL migration of the same number. A row trigger here,
-- as for send_buckets; times in milliseconds since the Unix epoch.
CREATE TABLE failure_counters (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    outcome     TEXT NOT NULL,
    smtp_code   INTEGER NOT NULL,
    enhanced    TEXT NOT NULL,
    domain      TEXT NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_at     INTEGER NOT NULL,
    PRIMARY KEY (campaign_id, outcome, smtp_code, enhanced, domain)
);

-- SQLite has no regular expressions: the enhanced status is the first word of the reply's text (after
-- the three-digit code of a raw reply, or after "(550): " as lettre reports a refusal) when that word
-- has the form class.subject.detail.
CREATE VIEW bn_failure_parts AS
SELECT a.id, a.campaign_id, a.outcome, a.smtp_code, a.finished_at,
       CASE WHEN a.word GLOB '[245].[0-9]*.[0-9]*' AND a.word NOT GLOB '*.*.*.*'
                 AND a.word NOT GLOB '*[^0-9.]*' AND length(a.word) <= 9
            THEN a.word ELSE '' END AS enhanced,
       lower(substr(r.email, instr(r.email, '@') + 1)) AS domain
FROM (SELECT t.*, substr(t.rest, 1, instr(t.rest || ' ', ' ') - 1) AS word
      FROM (SELECT d.id, d.campaign_id, d.recipient_id, d.outcome,
                   coalesce(d.smtp_code, 0) AS smtp_code, d.finished_at,
                   CASE WHEN d.reply GLOB '[0-9][0-9][0-9][ -]*' THEN substr(d.reply, 5)
                        WHEN instr(d.reply, '): ') > 0 THEN substr(d.reply, instr(d.reply, '): ') + 3)
                        ELSE '' END AS rest
            FROM delivery_attempts d) t) a
JOIN recipients r ON r.id = a.recipient_id;

CREATE TRIGGER delivery_attempts_failures AFTER INSERT ON delivery_attempts
WHEN NEW.outcome <> 'sent' BEGIN
    INSERT INTO failure_counters (campaign_id, outcome, smtp_code, enhanced, domain, attempts, last_at)
    SELECT campaign_id, outcome, smtp_code, enhanced, domain, 1, finished_at
    FROM bn_failure_parts WHERE id = NEW.id
    ON CONFLICT (campaign_id, outcome, smtp_code, enhanced, domain) DO UPDATE
       SET attempts = attempts + 1, last_at = max(last_at, excluded.last_at);
END;

-- Attempts made before this migration.
INSERT INTO failure_counters (campaign_id, outcome, smtp_code, enhanced, domain, attempts, last_at)
SELECT campaign_id, outcome, smtp_code, enhanced, domain, count(*), max(finished_at)
FROM bn_failure_parts WHERE outcome <> 'sent'
GROUP BY 1, 2, 3, 4, 5;

ALTER TABLE instances ADD COLUMN in_flight INTEGER NOT NULL DEFAULT 0;
