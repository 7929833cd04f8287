-- Daily caps for the cluster. A campaign's cap counts the notices sent today (send_buckets) and the
-- notices daemons hold right now (claimed, not yet recorded), whichever daemon holds them. Each daemon
-- keeps one row per capped campaign: it sets its count when it claims (under a lock on the campaign's
-- row, so claims of one capped campaign are serialised across daemons) and lowers it in the same
-- transaction as every outcome or release it records. Rows of daemons whose heartbeat expired are not
-- counted (their leases lapse and the notices are claimed again) and are deleted by the next claim.
CREATE TABLE campaign_holds (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    instance    TEXT NOT NULL,
    held        BIGINT NOT NULL CHECK (held >= 0),
    PRIMARY KEY (campaign_id, instance)
);

