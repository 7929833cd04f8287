-- Asynchronous bounces (docs/bounces.md): what happened to a notice after the relay accepted it.
--
-- * recipients.status gains 'bounced': the relay accepted the notice (it was 'sent'), and a report that
--   came back later says the mailbox never got it. A final status, counted like the others, and
--   flagged for a letter (postal_followup). The bounce's time, status code and diagnostic are kept
--   on the row for the evidence export.
-- * bounce_reports: every report as it arrived (pipe, Maildir, webhook), stored before it is
--   acknowledged, once per SHA-256 of what arrived, with the returned copy of our notice cut out
--   (it holds the breach text and the person's data). Processed afterwards, by any daemon.
-- * bounce_verdicts: one row per recipient block of a report: how it was matched, what the
--   classifier (rule, version) decided and which state change it caused. Append-only evidence.
-- * bounce_guards: a receiving domain whose recent final failures are mostly policy rejections
--   (5.7.x: the sender is blocked, the addresses are fine). Its recipients are held, not bounced,
--   and the campaign sends nothing more to it until an operator clears the guard.

-- A wider CHECK: NOT VALID skips the scan of rows that all satisfy the narrower one already.
ALTER TABLE recipients DROP CONSTRAINT recipients_status_check;
ALTER TABLE recipients ADD CONSTRAINT recipients_status_check
    CHECK (status IN ('queued', 'deferred', 'sent', 'failed', 'cancelled', 'postal', 'bounced')) NOT VALID;

-- Nullable columns without a default: a catalogue change, no rewrite of the table.
ALTER TABLE recipients ADD COLUMN bounced_at TIMESTAMPTZ;
ALTER TABLE recipients ADD COLUMN bounce_status TEXT;
ALTER TABLE recipients ADD COLUMN bounce_diagnostic TEXT;

ALTER TABLE campaign_counters ADD COLUMN bounced BIGINT NOT NULL DEFAULT 0;
ALTER TABLE wave_counters ADD COLUMN bounced BIGINT NOT NULL DEFAULT 0;

CREATE TABLE bounce_reports (
    id                 BIGSERIAL PRIMARY KEY,
    received_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    source             TEXT NOT NULL CHECK (source IN ('pipe', 'maildir', 'ses', 'sendgrid')),
    -- Of the bytes as they arrived: the same report delivered twice is stored once.
    sha256             TEXT NOT NULL UNIQUE,
    received_size      BIGINT NOT NULL,
    -- The address the report was delivered to (our VERP address), when the source says.
    envelope_to        TEXT,
    -- What is kept: headers and the delivery-status (or feedback, or webhook) part.
    body               BYTEA NOT NULL,
    -- Who is processing it (any daemon may): a lease, as recipients have, so a daemon that dies
    -- mid-batch leaves its reports to the next.
    lease_owner        TEXT,
    lease_expires_at   TIMESTAMPTZ,
    processed_at       TIMESTAMPTZ,
    kind               TEXT,
    result             TEXT,
    classifier_version INTEGER
);
CREATE INDEX bounce_reports_pending ON bounce_reports (id) WHERE processed_at IS NULL;

CREATE TABLE bounce_verdicts (
    id                 BIGSERIAL PRIMARY KEY,
    report_id          BIGINT NOT NULL REFERENCES bounce_reports (id),
    recipient_id       BIGINT,
    campaign_id        BIGINT,
    matched_by         TEXT NOT NULL CHECK (matched_by IN ('verp', 'message_id', 'queue_id', 'none')),
    status_code        TEXT,
    diagnostic         TEXT,
    remote_domain      TEXT,
    outcome            TEXT NOT NULL,
    class              TEXT,
    rule               TEXT NOT NULL,
    classifier_version INTEGER NOT NULL,
    state_change       TEXT NOT NULL CHECK (state_change IN ('bounced', 'held', 'none')),
    decided_at         TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX bounce_verdicts_report ON bounce_verdicts (report_id);
CREATE INDEX bounce_verdicts_recipient ON bounce_verdicts (recipient_id) WHERE recipient_id IS NOT NULL;
CREATE INDEX bounce_verdicts_domain ON bounce_verdicts (campaign_id, remote_domain, decided_at)
    WHERE campaign_id IS NOT NULL;
CREATE TRIGGER bounce_verdicts_append_only BEFORE UPDATE OR DELETE ON bounce_verdicts
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();

-- The relay's queue id of each accepted notice (Postfix: `250 2.0.0 Ok: queued as ID`), the third key
-- a bounce may name it by (Postfix's DSNs carry X-Postfix-Queue-ID). An expression over the attempt
-- log, so the recorder's writes stay as they were.
CREATE INDEX delivery_attempts_relay_queue_id
    ON delivery_attempts ((substring(reply from 'queued as ([0-9A-Za-z]+)'))) WHERE outcome = 'sent';

CREATE TABLE bounce_guards (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    domain      TEXT NOT NULL,
    tripped_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    failures    BIGINT NOT NULL,
    policy      BIGINT NOT NULL,
    cleared_at  TIMESTAMPTZ,
    cleared_by  TEXT,
    PRIMARY KEY (campaign_id, domain, tripped_at)
);

-- The counters count 'bounced' too. A recipient becomes bounced only by an update (from 'sent'), but
-- the insert functions count it as well, so that the counters add up whatever writes the rows.
CREATE OR REPLACE FUNCTION bn_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    WITH delta AS (
        SELECT campaign_id, count(*) AS total,
               count(*) FILTER (WHERE status = 'queued') AS queued,
               count(*) FILTER (WHERE status = 'deferred') AS deferred,
               count(*) FILTER (WHERE status = 'sent') AS sent,
               count(*) FILTER (WHERE status = 'failed') AS failed,
               count(*) FILTER (WHERE status = 'cancelled') AS cancelled,
               count(*) FILTER (WHERE status = 'postal') AS postal,
               count(*) FILTER (WHERE status = 'bounced') AS bounced
        FROM new_rows GROUP BY campaign_id
    ), counted AS (
        UPDATE campaign_counters c SET
            total = c.total + d.total, queued = c.queued + d.queued, deferred = c.deferred + d.deferred,
            sent = c.sent + d.sent, failed = c.failed + d.failed, cancelled = c.cancelled + d.cancelled,
            postal = c.postal + d.postal, bounced = c.bounced + d.bounced, updated_at = now()
        FROM delta d WHERE c.campaign_id = d.campaign_id
        RETURNING c.campaign_id
    )
    SELECT d.campaign_id INTO missing FROM delta d
    WHERE NOT EXISTS (SELECT 1 FROM counted k WHERE k.campaign_id = d.campaign_id)
    ORDER BY d.campaign_id LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'insert on table "recipients" violates foreign key to campaigns: campaign % does not exist', missing
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION bn_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- As before (0001): old and new rows counted separately and subtracted, never joined.
    WITH changes AS (
        SELECT campaign_id, status, 1 AS sign FROM new_rows
        UNION ALL
        SELECT campaign_id, status, -1 FROM old_rows
    ), delta AS (
        SELECT campaign_id,
               coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
               coalesce(sum(sign) FILTER (WHERE status = 'deferred'), 0) AS deferred,
               coalesce(sum(sign) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
               coalesce(sum(sign) FILTER (WHERE status = 'postal'), 0) AS postal,
               coalesce(sum(sign) FILTER (WHERE status = 'bounced'), 0) AS bounced
        FROM changes GROUP BY campaign_id
    )
    UPDATE campaign_counters c SET
        queued = c.queued + d.queued, deferred = c.deferred + d.deferred, sent = c.sent + d.sent,
        failed = c.failed + d.failed, cancelled = c.cancelled + d.cancelled, postal = c.postal + d.postal,
        bounced = c.bounced + d.bounced, updated_at = now()
    FROM delta d
    WHERE c.campaign_id = d.campaign_id
      AND (d.queued, d.deferred, d.sent, d.failed, d.cancelled, d.postal, d.bounced)
          <> (0, 0, 0, 0, 0, 0, 0);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION bn_wave_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
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
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'cancelled'), 0) AS cancelled,
               coalesce(sum(c.sign) FILTER (WHERE c.status = 'bounced'), 0) AS bounced
        FROM changes c JOIN waves w ON w.campaign_id = c.campaign_id AND w.first_id IS NOT NULL
             AND c.id > w.first_id AND (w.last_id IS NULL OR c.id <= w.last_id)
        GROUP BY 1, 2
    )
    UPDATE wave_counters k SET
        queued = k.queued + d.queued, deferred = k.deferred + d.deferred, sent = k.sent + d.sent,
        failed = k.failed + d.failed, cancelled = k.cancelled + d.cancelled, bounced = k.bounced + d.bounced
    FROM delta d
    WHERE k.campaign_id = d.campaign_id AND k.wave_number = d.number
      AND (d.queued, d.deferred, d.sent, d.failed, d.cancelled, d.bounced) <> (0, 0, 0, 0, 0, 0);
    RETURN NULL;
END $$;

DROP VIEW campaign_progress;
CREATE VIEW campaign_progress AS
SELECT p.*,
       bn_eta_seconds(p.queued + p.deferred, p.sent_last_minute, p.sent_last_hour) AS eta_seconds
FROM (
    SELECT c.id AS campaign_id, c.name, c.state, k.total, k.queued, k.deferred, k.sent, k.failed,
           k.cancelled, k.postal, k.bounced, k.updated_at AS last_change_at,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = c.id AND b.bucket >= bn_rate_window_end() - 60
              AND b.bucket < bn_rate_window_end()) AS sent_last_minute,
           (SELECT coalesce(sum(b.sent), 0)::bigint FROM send_buckets b
            WHERE b.campaign_id = c.id AND b.bucket >= bn_rate_window_end() - 3600
              AND b.bucket < bn_rate_window_end()) AS sent_last_hour
    FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id
) p;

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
           coalesce(k.bounced, 0) AS bounced,
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
