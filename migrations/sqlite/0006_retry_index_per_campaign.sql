-- Deferred work is found per campaign: the partial index on retry_due_at now leads with campaign_id
-- (as in version 6 of the PostgreSQL dialect). With retry_due_at alone, SQLite's planner answered the
-- retry claim (`campaign_id = ? AND retry_due_at <= ?`) through recipients_campaign_id, reading every
-- recipient of the campaign and sorting the deferred ones, on every claim.
DROP INDEX recipients_retry_due;
CREATE INDEX recipients_retry_due ON recipients (campaign_id, retry_due_at) WHERE retry_due_at IS NOT NULL;
