-- Deadline-first claims: as migrations/postgres/0014_deadline_order.sql (see there).

ALTER TABLE recipients ADD COLUMN deadline_day INTEGER NOT NULL DEFAULT 0;

UPDATE recipients SET deadline_day = (
    SELECT CAST(julianday(d.deadline) - julianday('1970-01-01') AS INTEGER)
    FROM campaign_deadlines d
    WHERE d.campaign_id = recipients.campaign_id AND d.jurisdiction = coalesce(recipients.jurisdiction, ''))
WHERE EXISTS (
    SELECT 1 FROM campaign_deadlines d
    WHERE d.campaign_id = recipients.campaign_id AND d.jurisdiction = coalesce(recipients.jurisdiction, ''));

CREATE INDEX recipients_claim_order ON recipients (campaign_id, deadline_day, id)
    WHERE status = 'queued';
