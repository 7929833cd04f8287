-- Version 5 of the PostgreSQL dialect replaces the row-by-row foreign keys of recipients and
-- delivery_attempts with set-based checks in its statement triggers, for bulk-load speed, and checks
-- one thing more: an attempt names a recipient of the attempt's own campaign. SQLite keeps its foreign
-- keys (one index probe per row, no lock: cheap) and gains that one check, so that both dialects refuse
-- the same rows.
CREATE TRIGGER delivery_attempts_same_campaign BEFORE INSERT ON delivery_attempts
    WHEN (SELECT campaign_id FROM recipients WHERE id = NEW.recipient_id) IS NOT NEW.campaign_id
BEGIN
    SELECT RAISE(ABORT, 'FOREIGN KEY constraint failed: the attempt names no recipient of its campaign');
END;
