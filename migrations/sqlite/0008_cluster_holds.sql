-- PostgreSQL's 0008 adds campaign_holds, the notices each daemon holds for a capped campaign, so that
-- a daily cap holds for a cluster of daemons. SQLite allows one daemon (a lock file beside the
-- database), which counts what it holds in memory: the table exists here only so that both dialects
-- keep the same tables, and stays empty.
CREATE TABLE campaign_holds (
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    instance    TEXT NOT NULL,
    held        INTEGER NOT NULL CHECK (held >= 0),
    PRIMARY KEY (campaign_id, instance)
);
