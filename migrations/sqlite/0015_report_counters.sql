-- The regulator report's figures per (campaign, jurisdiction): see the PostgreSQL migration of the same
-- number for what each column means and when the times stop being exact. Row triggers here, beside
-- those of 0010 (each upserts, so their order does not matter). A recipient's campaign cannot change
-- (recipients_identity_fixed).

ALTER TABLE jurisdiction_counters ADD COLUMN letters_owed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jurisdiction_counters ADD COLUMN no_contact INTEGER NOT NULL DEFAULT 0;
-- Milliseconds since the epoch, as every time here.
ALTER TABLE jurisdiction_counters ADD COLUMN first_email INTEGER;
ALTER TABLE jurisdiction_counters ADD COLUMN last_email INTEGER;
ALTER TABLE jurisdiction_counters ADD COLUMN times_exact INTEGER NOT NULL DEFAULT 1;

-- The predicates, spelled for NEW and OLD (SQLite has no SQL functions):
-- owed:       status <> 'cancelled' AND (channel = 'postal' OR status = 'postal'
--             OR (status IN ('failed', 'bounced') AND postal_followup AND finished_at IS NOT NULL))
-- no_contact: (email IS NULL OR (status IN ('failed', 'bounced') AND finished_at IS NOT NULL))
--             AND coalesce(address1, '') = ''
CREATE TRIGGER recipients_report_counters_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO jurisdiction_counters
        (campaign_id, jurisdiction, letters_owed, no_contact, first_email, last_email, times_exact)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''),
            NEW.status <> 'cancelled' AND (NEW.channel = 'postal' OR NEW.status = 'postal'
                OR (NEW.status IN ('failed', 'bounced') AND NEW.postal_followup AND NEW.finished_at IS NOT NULL)),
            (NEW.email IS NULL OR (NEW.status IN ('failed', 'bounced') AND NEW.finished_at IS NOT NULL))
                AND coalesce(NEW.address1, '') = '',
            CASE WHEN NEW.status = 'sent' THEN NEW.finished_at END,
            CASE WHEN NEW.status = 'sent' THEN NEW.finished_at END,
            NEW.status <> 'bounced')
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        letters_owed = letters_owed + excluded.letters_owed,
        no_contact = no_contact + excluded.no_contact,
        first_email = coalesce(min(first_email, excluded.first_email), first_email, excluded.first_email),
        last_email = coalesce(max(last_email, excluded.last_email), last_email, excluded.last_email),
        times_exact = times_exact AND excluded.times_exact;
END;

CREATE TRIGGER recipients_report_counters_update
AFTER UPDATE OF status, jurisdiction, channel, postal_followup, finished_at, email, address1 ON recipients
WHEN NEW.jurisdiction IS NOT OLD.jurisdiction
  OR (OLD.status <> 'cancelled' AND (OLD.channel = 'postal' OR OLD.status = 'postal'
        OR (OLD.status IN ('failed', 'bounced') AND OLD.postal_followup AND OLD.finished_at IS NOT NULL)))
     IS NOT (NEW.status <> 'cancelled' AND (NEW.channel = 'postal' OR NEW.status = 'postal'
        OR (NEW.status IN ('failed', 'bounced') AND NEW.postal_followup AND NEW.finished_at IS NOT NULL)))
  OR ((OLD.email IS NULL OR (OLD.status IN ('failed', 'bounced') AND OLD.finished_at IS NOT NULL))
        AND coalesce(OLD.address1, '') = '')
     IS NOT ((NEW.email IS NULL OR (NEW.status IN ('failed', 'bounced') AND NEW.finished_at IS NOT NULL))
        AND coalesce(NEW.address1, '') = '')
BEGIN
    UPDATE jurisdiction_counters SET
        letters_owed = letters_owed - (OLD.status <> 'cancelled' AND (OLD.channel = 'postal'
            OR OLD.status = 'postal' OR (OLD.status IN ('failed', 'bounced') AND OLD.postal_followup
            AND OLD.finished_at IS NOT NULL))),
        no_contact = no_contact - ((OLD.email IS NULL OR (OLD.status IN ('failed', 'bounced')
            AND OLD.finished_at IS NOT NULL)) AND coalesce(OLD.address1, '') = '')
    WHERE campaign_id = OLD.campaign_id AND jurisdiction = coalesce(OLD.jurisdiction, '');
    INSERT INTO jurisdiction_counters (campaign_id, jurisdiction, letters_owed, no_contact)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''),
            NEW.status <> 'cancelled' AND (NEW.channel = 'postal' OR NEW.status = 'postal'
                OR (NEW.status IN ('failed', 'bounced') AND NEW.postal_followup AND NEW.finished_at IS NOT NULL)),
            (NEW.email IS NULL OR (NEW.status IN ('failed', 'bounced') AND NEW.finished_at IS NOT NULL))
                AND coalesce(NEW.address1, '') = '')
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        letters_owed = letters_owed + excluded.letters_owed,
        no_contact = no_contact + excluded.no_contact;
END;

-- A row that becomes sent (or changes time or jurisdiction while sent) brings its time.
CREATE TRIGGER recipients_report_times_sent AFTER UPDATE OF status, jurisdiction, finished_at ON recipients
WHEN NEW.status = 'sent' AND NEW.finished_at IS NOT NULL
 AND (OLD.status IS NOT 'sent' OR OLD.finished_at IS NOT NEW.finished_at
      OR OLD.jurisdiction IS NOT NEW.jurisdiction)
BEGIN
    INSERT INTO jurisdiction_counters (campaign_id, jurisdiction, first_email, last_email)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''), NEW.finished_at, NEW.finished_at)
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        first_email = coalesce(min(first_email, excluded.first_email), excluded.first_email),
        last_email = coalesce(max(last_email, excluded.last_email), excluded.last_email);
END;

-- A row that arrives bounced other than from its own pair's sent or bounced brings no acceptance time.
CREATE TRIGGER recipients_report_times_bounced AFTER UPDATE OF status, jurisdiction ON recipients
WHEN NEW.status = 'bounced'
 AND NOT (OLD.status IN ('sent', 'bounced') AND OLD.jurisdiction IS NEW.jurisdiction)
BEGIN
    INSERT INTO jurisdiction_counters (campaign_id, jurisdiction, times_exact)
    VALUES (NEW.campaign_id, coalesce(NEW.jurisdiction, ''), 0)
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET times_exact = 0;
END;

-- A row that counted and left (back to the queue, to another jurisdiction, another time): its pair's
-- times stay exact only if it was a sent row strictly inside them.
CREATE TRIGGER recipients_report_times_left AFTER UPDATE OF status, jurisdiction, finished_at ON recipients
WHEN OLD.status IN ('sent', 'bounced')
 AND NOT (OLD.jurisdiction IS NEW.jurisdiction AND (NEW.status = 'bounced'
          OR (OLD.status = 'sent' AND NEW.status = 'sent' AND OLD.finished_at IS NEW.finished_at)))
BEGIN
    UPDATE jurisdiction_counters SET times_exact = 0
    WHERE campaign_id = OLD.campaign_id AND jurisdiction = coalesce(OLD.jurisdiction, '')
      AND (OLD.status = 'bounced' OR OLD.finished_at IS NULL OR first_email IS NULL
           OR OLD.finished_at <= first_email OR OLD.finished_at >= last_email);
END;

-- Campaigns already under way: the figures as the report counted them from the recipients.
UPDATE jurisdiction_counters SET
    letters_owed = f.letters_owed, no_contact = f.no_contact,
    first_email = f.first_email, last_email = f.last_email, times_exact = f.times_exact
FROM (
    SELECT campaign_id, jurisdiction,
           coalesce(sum(owed), 0) AS letters_owed, coalesce(sum(no_contact), 0) AS no_contact,
           min(sent_at) AS first_email, max(sent_at) AS last_email,
           coalesce(min(NOT (status = 'bounced' AND sent_at IS NULL)), 1) AS times_exact
    FROM (
        SELECT r.campaign_id, coalesce(r.jurisdiction, '') AS jurisdiction, r.status,
               r.status <> 'cancelled' AND (r.channel = 'postal' OR r.status = 'postal'
                   OR (r.status IN ('failed', 'bounced') AND r.postal_followup
                       AND r.finished_at IS NOT NULL)) AS owed,
               (r.email IS NULL OR (r.status IN ('failed', 'bounced') AND r.finished_at IS NOT NULL))
                   AND coalesce(r.address1, '') = '' AS no_contact,
               CASE WHEN r.status = 'sent' THEN r.finished_at
                    WHEN r.status = 'bounced' THEN (SELECT max(d.finished_at) FROM delivery_attempts d
                                                   WHERE d.recipient_id = r.id AND d.outcome = 'sent')
               END AS sent_at
        FROM recipients r
    ) GROUP BY campaign_id, jurisdiction
) AS f
WHERE jurisdiction_counters.campaign_id = f.campaign_id
  AND jurisdiction_counters.jurisdiction = f.jurisdiction;
