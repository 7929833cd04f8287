-- Deadline-first claims (docs/deadlines.md, "Sending order"): within a campaign, fresh recipients are
-- claimed in the order of their jurisdiction's deadline, then in queue order.
--
-- * recipients.deadline_day: the recipient's deadline as a day number (days since 1970-01-01), written
--   by the import from the campaign's deadlines and rewritten for a jurisdiction when its deadline
--   changes (rules file or campaign dates); 0 when the campaign has no deadlines (no discovered_at), so
--   that such a campaign keeps its queue order.
-- * recipients_claim_order: the claim's walk, (campaign_id, deadline_day, id) for queued rows, read
--   from the claim's position onwards and stopped after LIMIT rows, as recipients_campaign_id is for
--   queue order. Partial: a row leaves it when it is sent or fails, so the index holds the queue, not
--   the campaign, and a status change adds no entry to it.

ALTER TABLE recipients ADD COLUMN deadline_day INTEGER NOT NULL DEFAULT 0;

-- Rows imported before this column: their campaign's computed deadlines, where there are some.
UPDATE recipients r SET deadline_day = d.deadline - DATE '1970-01-01'
FROM campaign_deadlines d
WHERE d.campaign_id = r.campaign_id AND d.jurisdiction = coalesce(r.jurisdiction, '');

CREATE INDEX recipients_claim_order ON recipients (campaign_id, deadline_day, id)
    WHERE status = 'queued';
