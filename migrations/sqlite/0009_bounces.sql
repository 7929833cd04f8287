-- Asynchronous bounces: see the PostgreSQL migration of the same number for what each part is for.

-- A wider CHECK on recipients.status. SQLite cannot alter a constraint; its documented way for a
-- change that every stored row already satisfies (https://sqlite.org/lang_altertable.html, "making
-- other kinds of table schema changes") is to edit the table's definition in sqlite_schema and bump
-- schema_version, which spares rebuilding the table with its indexes and triggers.
PRAGMA writable_schema = ON;
UPDATE sqlite_schema
SET sql = replace(sql, '''cancelled'', ''postal'')),', '''cancelled'', ''postal'', ''bounced'')),')
WHERE type = 'table' AND name = 'recipients';
PRAGMA writable_schema = RESET;

ALTER TABLE recipients ADD COLUMN bounced_at INTEGER;
ALTER TABLE recipients ADD COLUMN bounce_status TEXT;
ALTER TABLE recipients ADD COLUMN bounce_diagnostic TEXT;

ALTER TABLE campaign_counters ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;
ALTER TABLE wave_counters ADD COLUMN bounced INTEGER NOT NULL DEFAULT 0;

CREATE TABLE bounce_reports (
    id                 INTEGER PRIMARY KEY,
    received_at        INTEGER NOT NULL,
    source             TEXT NOT NULL CHECK (source IN ('pipe', 'maildir', 'ses', 'sendgrid')),
    sha256             TEXT NOT NULL UNIQUE,
    received_size      INTEGER NOT NULL,
    envelope_to        TEXT,
    body               BLOB NOT NULL,
    -- Who is processing it (any daemon may): a lease, as recipients have, so a daemon that dies
    -- mid-batch leaves its reports to the next.
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    processed_at       INTEGER,
    kind               TEXT,
    result             TEXT,
    classifier_version INTEGER
);
CREATE INDEX bounce_reports_pending ON bounce_reports (id) WHERE processed_at IS NULL;

CREATE TABLE bounce_verdicts (
    id                 INTEGER PRIMARY KEY,
    report_id          INTEGER NOT NULL REFERENCES bounce_reports (id),
    recipient_id       INTEGER,
    campaign_id        INTEGER,
    matched_by         TEXT NOT NULL CHECK (matched_by IN ('verp', 'message_id', 'queue_id', 'none')),
    status_code        TEXT,
    diagnostic         TEXT,
    remote_domain      TEXT,
    outcome            TEXT NOT NULL,
    class              TEXT,
    rule               TEXT NOT NULL,
    classifier_version INTEGER NOT NULL,
    state_change       TEXT NOT NULL CHECK (state_change IN ('bounced', 'held', 'none')),
    decided_at         INTEGER NOT NULL
);
CREATE INDEX bounce_verdicts_report ON bounce_verdicts (report_id);
CREATE INDEX bounce_verdicts_recipient ON bounce_verdicts (recipient_id) WHERE recipient_id IS NOT NULL;
CREATE INDEX bounce_verdicts_domain ON bounce_verdicts (campaign_id, remote_domain, decided_at)
    WHERE campaign_id IS NOT NULL;
CREATE TRIGGER bounce_verdicts_no_update BEFORE UPDATE ON bounce_verdicts BEGIN
    SELECT RAISE(ABORT, 'UPDATE on bounce_verdicts is not allowed: this table is an append-only record');
END;
CREATE TRIGGER bounce_verdicts_no_delete BEFORE DELETE ON bounce_verdicts BEGIN
    SELECT RAISE(ABORT, 'DELETE on bounce_verdicts is not allowed: this table is an append-only record');
END;

-- The relay's queue id (see the PostgreSQL migration): here the rest of the reply after `queued as `,
-- which is the id in Postfix's reply (SQLite has no regular expressions).
CREATE INDEX delivery_attempts_relay_queue_id
    ON delivery_attempts (substr(reply, instr(reply, 'queued as ') + 10))
    WHERE outcome = 'sent' AND instr(reply, 'queued as ') > 0;

CREATE TABLE bounce_guards (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    domain      TEXT NOT NULL,
    tripped_at  INTEGER NOT NULL,
    failures    INTEGER NOT NULL,
    policy      INTEGER NOT NULL,
    cleared_at  INTEGER,
    cleared_by  TEXT,
    PRIMARY KEY (campaign_id, domain, tripped_at)
);

DROP TRIGGER recipients_counters_insert;
CREATE TRIGGER recipients_counters_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO campaign_counters (campaign_id, total, queued, deferred, sent, failed, cancelled, postal, bounced)
    VALUES (NEW.campaign_id, 1, NEW.status = 'queued', NEW.status = 'deferred', NEW.status = 'sent',
            NEW.status = 'failed', NEW.status = 'cancelled', NEW.status = 'postal', NEW.status = 'bounced')
    ON CONFLICT (campaign_id) DO UPDATE SET
        total = total + 1, queued = queued + excluded.queued, deferred = deferred + excluded.deferred,
        sent = sent + excluded.sent, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, postal = postal + excluded.postal,
        bounced = bounced + excluded.bounced,
        updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);
END;

DROP TRIGGER recipients_counters_update;
CREATE TRIGGER recipients_counters_update AFTER UPDATE OF status ON recipients
WHEN NEW.status IS NOT OLD.status BEGIN
    UPDATE campaign_counters SET
        queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued'),
        deferred = deferred + (NEW.status = 'deferred') - (OLD.status = 'deferred'),
        sent = sent + (NEW.status = 'sent') - (OLD.status = 'sent'),
        failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled'),
        postal = postal + (NEW.status = 'postal') - (OLD.status = 'postal'),
        bounced = bounced + (NEW.status = 'bounced') - (OLD.status = 'bounced'),
        updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE campaign_id = NEW.campaign_id;
END;

DROP TRIGGER recipients_wave_counters_update;
CREATE TRIGGER recipients_wave_counters_update AFTER UPDATE OF status ON recipients
WHEN NEW.status IS NOT OLD.status AND NEW.channel = 'email' BEGIN
    UPDATE wave_counters SET
        queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued'),
        deferred = deferred + (NEW.status = 'deferred') - (OLD.status = 'deferred'),
        sent = sent + (NEW.status = 'sent') - (OLD.status = 'sent'),
        failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled'),
        bounced = bounced + (NEW.status = 'bounced') - (OLD.status = 'bounced')
    WHERE campaign_id = NEW.campaign_id
      AND wave_number = (SELECT w.number FROM waves w
                         WHERE w.campaign_id = NEW.campaign_id AND w.first_id IS NOT NULL
                           AND NEW.id > w.first_id AND (w.last_id IS NULL OR NEW.id <= w.last_id));
END;

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
           k.cancelled, k.postal, k.bounced, k.updated_at AS last_change_at,
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
           coalesce(k.total, 0) AS total, coalesce(k.queued, 0) AS queued,
           coalesce(k.deferred, 0) AS deferred, coalesce(k.sent, 0) AS sent,
           coalesce(k.failed, 0) AS failed, coalesce(k.cancelled, 0) AS cancelled,
           coalesce(k.bounced, 0) AS bounced,
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
