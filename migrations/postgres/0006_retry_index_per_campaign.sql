-- Deferred work is found per campaign: the partial index on retry_due_at now leads with campaign_id.
--
-- The retry claim asks for `campaign_id = $1 AND retry_due_at <= $2`. With the index on retry_due_at
-- alone, PostgreSQL chose recipients_campaign_id instead whenever its statistics had not seen the
-- campaign yet (a campaign imported since the last ANALYZE: estimated at one row), and then read every
-- recipient of the campaign on every claim to find the few deferred ones. Measured: claims of 30 to
-- 200 ms at 200,000 recipients, half the dispatcher's speed (docs/benchmarks.md); at 15,000,000 it
-- would be seconds per claim. Leading with campaign_id, this index answers both conditions in the order
-- the claim wants, and stays as small as before: only rows waiting for a retry enter it.
--
-- Built inside the migration's transaction (not CONCURRENTLY): it reads the table once, and the
-- daemons must be stopped for a migration anyway (docs/deploy.md).
DROP INDEX recipients_retry_due;
CREATE INDEX recipients_retry_due ON recipients (campaign_id, retry_due_at) WHERE retry_due_at IS NOT NULL;
