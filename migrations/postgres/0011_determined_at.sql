-- The day the company determined that a breach occurred, when the campaign file records it
-- (`determined_at`, docs/campaigns.md). Clocks the rules start at determination count from it
-- (docs/deadlines.md); without it they count from discovered_at, the earlier reading.
ALTER TABLE campaigns ADD COLUMN determined_at DATE;
