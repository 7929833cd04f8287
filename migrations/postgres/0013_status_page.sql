-- What the status page reads, kept cheap at any campaign size.
--
-- failure_counters: attempts that did not end in `sent`, per campaign, outcome, SMTP code, enhanced
-- status code (RFC 3463: the first word of the reply's text, after the code of a raw reply or after
-- "(550): " as lettre reports a refusal) and receiving domain, kept by a statement
-- trigger on delivery_attempts like send_buckets. The page groups failures by cause without reading
-- the attempt log; the domain is the part after the last '@' (lower case), never the address.
CREATE TABLE failure_counters (
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    outcome     TEXT NOT NULL,
    -- 0: no SMTP answer (connection refused, timeout, TLS).
    smtp_code   INTEGER NOT NULL,
    -- '' when the reply carries none.
    enhanced    TEXT NOT NULL,
    domain      TEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    last_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (campaign_id, outcome, smtp_code, enhanced, domain)
);

CREATE FUNCTION bn_enhanced_status(reply TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(substring(reply FROM
        '(?:^[0-9]{3}[ -]|\): )([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)'), '')
$$;

CREATE FUNCTION bn_count_failures() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Ordered, as for send_buckets, so that concurrent daemons lock rows in the same order.
    INSERT INTO failure_counters AS f (campaign_id, outcome, smtp_code, enhanced, domain, attempts, last_at)
    SELECT n.campaign_id, n.outcome, coalesce(n.smtp_code, 0), bn_enhanced_status(n.reply),
           lower(substring(r.email FROM '@([^@]*)$')), count(*), max(n.finished_at)
    FROM new_attempts n JOIN recipients r ON r.id = n.recipient_id
    WHERE n.outcome <> 'sent'
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (campaign_id, outcome, smtp_code, enhanced, domain) DO UPDATE
       SET attempts = f.attempts + EXCLUDED.attempts, last_at = greatest(f.last_at, EXCLUDED.last_at);
    RETURN NULL;
END $$;

CREATE TRIGGER delivery_attempts_failures AFTER INSERT ON delivery_attempts
    REFERENCING NEW TABLE AS new_attempts FOR EACH STATEMENT EXECUTE FUNCTION bn_count_failures();

-- Attempts made before this migration.
INSERT INTO failure_counters (campaign_id, outcome, smtp_code, enhanced, domain, attempts, last_at)
SELECT n.campaign_id, n.outcome, coalesce(n.smtp_code, 0), bn_enhanced_status(n.reply),
       lower(substring(r.email FROM '@([^@]*)$')), count(*), max(n.finished_at)
FROM delivery_attempts n JOIN recipients r ON r.id = n.recipient_id
WHERE n.outcome <> 'sent'
GROUP BY 1, 2, 3, 4, 5;

-- What each daemon holds (claimed, outcome not yet recorded), written with its heartbeat.
ALTER TABLE instances ADD COLUMN in_flight BIGINT NOT NULL DEFAULT 0;
