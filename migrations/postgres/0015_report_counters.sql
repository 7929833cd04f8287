-- The regulator report's figures kept per (campaign, jurisdiction), so that `report regulators` reads
-- a few rows instead of every recipient (docs/regulators.md, "How the figures are counted"):
--
-- * letters_owed, no_contact: counts of two row predicates, kept by the same statement triggers as the
--   status counts (0010), old rows minus, new rows plus. The predicates are the report's, read "now":
--   owed = not cancelled and (postal channel or status, or a failure or bounce flagged for a letter);
--   no_contact = no usable email (none, failed or bounced) and no postal address.
-- * first_email, last_email: the earliest and latest time a notice of the pair was accepted by the relay,
--   counting the recipients that are `sent` (their finished_at) or `bounced` (their accepted attempt's
--   time, which was their finished_at when they became `sent`). A minimum cannot be taken back, so
--   when a row that counted leaves in a way that could move it (a guard puts a bounced recipient back
--   in the queue, an operator moves a sent recipient to another jurisdiction or changes its time),
--   times_exact becomes false and the report counts that campaign from its recipients instead, as it
--   does for `--as-of`. A sent row whose time lies strictly between the pair's first and last leaves
--   them exact.

ALTER TABLE jurisdiction_counters
    ADD COLUMN letters_owed BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN no_contact   BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN first_email  TIMESTAMPTZ,
    ADD COLUMN last_email   TIMESTAMPTZ,
    ADD COLUMN times_exact  BOOLEAN NOT NULL DEFAULT TRUE;

-- The two predicates, in one place for the triggers and the backfill. IMMUTABLE and SQL, so the planner
-- inlines them into the triggers' aggregates (no function call per row).
CREATE FUNCTION bn_letter_owed(status TEXT, channel TEXT, postal_followup BOOLEAN,
                               finished_at TIMESTAMPTZ) RETURNS BOOLEAN
LANGUAGE sql IMMUTABLE AS $$
    SELECT status <> 'cancelled' AND (channel = 'postal' OR status = 'postal'
        OR (status IN ('failed', 'bounced') AND postal_followup AND finished_at IS NOT NULL))
$$;
CREATE FUNCTION bn_no_contact(status TEXT, email TEXT, address1 TEXT, finished_at TIMESTAMPTZ)
RETURNS BOOLEAN LANGUAGE sql IMMUTABLE AS $$
    SELECT (email IS NULL OR (status IN ('failed', 'bounced') AND finished_at IS NOT NULL))
        AND coalesce(address1, '') = ''
$$;

CREATE OR REPLACE FUNCTION bn_jurisdiction_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO jurisdiction_counters AS k
        (campaign_id, jurisdiction, total, queued, deferred, sent, failed, cancelled, postal, bounced,
         letters_owed, no_contact, first_email, last_email, times_exact)
    SELECT campaign_id, coalesce(jurisdiction, ''), count(*),
           count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'deferred'),
           count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'cancelled'), count(*) FILTER (WHERE status = 'postal'),
           count(*) FILTER (WHERE status = 'bounced'),
           count(*) FILTER (WHERE bn_letter_owed(status, channel, postal_followup, finished_at)),
           count(*) FILTER (WHERE bn_no_contact(status, email, address1, finished_at)),
           min(finished_at) FILTER (WHERE status = 'sent'), max(finished_at) FILTER (WHERE status = 'sent'),
           -- A row inserted as bounced brings no acceptance time.
           NOT bool_or(status = 'bounced')
    FROM new_rows GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (campaign_id, jurisdiction) DO UPDATE SET
        total = k.total + EXCLUDED.total, queued = k.queued + EXCLUDED.queued,
        deferred = k.deferred + EXCLUDED.deferred, sent = k.sent + EXCLUDED.sent,
        failed = k.failed + EXCLUDED.failed, cancelled = k.cancelled + EXCLUDED.cancelled,
        postal = k.postal + EXCLUDED.postal, bounced = k.bounced + EXCLUDED.bounced,
        letters_owed = k.letters_owed + EXCLUDED.letters_owed,
        no_contact = k.no_contact + EXCLUDED.no_contact,
        first_email = least(k.first_email, EXCLUDED.first_email),
        last_email = greatest(k.last_email, EXCLUDED.last_email),
        times_exact = k.times_exact AND EXCLUDED.times_exact;
    RETURN NULL;
END $$;

-- The counts as in 0010, with the two predicates. Then, only when the statement touched a row that is
-- or was sent or bounced (the claims and leases never do), the times: least/greatest with every row now
-- `sent` (idempotent for rows already counted), and times_exact cleared where a row that counted left
-- its pair in a way that could move the first or last.
CREATE OR REPLACE FUNCTION bn_jurisdiction_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH changes AS (
        SELECT campaign_id, coalesce(jurisdiction, '') AS jurisdiction, status, 1 AS sign,
               bn_letter_owed(status, channel, postal_followup, finished_at) AS owed,
               bn_no_contact(status, email, address1, finished_at) AS no_contact
        FROM new_rows
        UNION ALL
        SELECT campaign_id, coalesce(jurisdiction, ''), status, -1,
               bn_letter_owed(status, channel, postal_followup, finished_at),
               bn_no_contact(status, email, address1, finished_at)
        FROM old_rows
    ), delta AS (
        SELECT campaign_id, jurisdiction, sum(sign) AS total,
               coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
               coalesce(sum(sign) FILTER (WHERE status = 'deferred'), 0) AS deferred,
               coalesce(sum(sign) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
               coalesce(sum(sign) FILTER (WHERE status = 'postal'), 0) AS postal,
               coalesce(sum(sign) FILTER (WHERE status = 'bounced'), 0) AS bounced,
               coalesce(sum(sign) FILTER (WHERE owed), 0) AS letters_owed,
               coalesce(sum(sign) FILTER (WHERE no_contact), 0) AS no_contact
        FROM changes GROUP BY 1, 2
    )
    UPDATE jurisdiction_counters k SET
        total = k.total + d.total, queued = k.queued + d.queued,
        deferred = k.deferred + d.deferred, sent = k.sent + d.sent,
        failed = k.failed + d.failed, cancelled = k.cancelled + d.cancelled,
        postal = k.postal + d.postal, bounced = k.bounced + d.bounced,
        letters_owed = k.letters_owed + d.letters_owed, no_contact = k.no_contact + d.no_contact
    FROM delta d
    WHERE k.campaign_id = d.campaign_id AND k.jurisdiction = d.jurisdiction
      AND (d.total, d.queued, d.deferred, d.sent, d.failed, d.cancelled, d.postal, d.bounced,
           d.letters_owed, d.no_contact) <> (0, 0, 0, 0, 0, 0, 0, 0, 0, 0);

    IF EXISTS (SELECT 1 FROM new_rows WHERE status IN ('sent', 'bounced'))
       OR EXISTS (SELECT 1 FROM old_rows WHERE status IN ('sent', 'bounced')) THEN
        WITH pairs AS (
            SELECT o.campaign_id AS old_campaign, coalesce(o.jurisdiction, '') AS old_jurisdiction,
                   o.status AS old_status, o.finished_at AS old_at,
                   n.campaign_id, coalesce(n.jurisdiction, '') AS jurisdiction, n.status,
                   n.finished_at
            FROM old_rows o JOIN new_rows n ON n.id = o.id
            WHERE o.status IN ('sent', 'bounced') OR n.status IN ('sent', 'bounced')
        ), kept AS (
            -- Still counted where it was, at the same time: sent and unchanged, sent then bounced (its
            -- acceptance time stays), or bounced and still bounced.
            SELECT *, old_campaign = campaign_id AND old_jurisdiction = jurisdiction
                      AND ((old_status = 'sent' AND status = 'sent' AND old_at IS NOT DISTINCT FROM finished_at)
                           OR (old_status IN ('sent', 'bounced') AND status = 'bounced')) AS same
            FROM pairs
        ), effects AS (
            -- A count that left: its pair's times stop being exact unless it was a sent row strictly
            -- inside them.
            SELECT old_campaign AS campaign_id, old_jurisdiction AS jurisdiction,
                   NULL::timestamptz AS first_t, NULL::timestamptz AS last_t,
                   bool_or(old_status = 'bounced' OR old_at IS NULL OR old_at <= k.first_email
                           OR old_at >= k.last_email OR k.first_email IS NULL) AS breaks
            FROM kept JOIN jurisdiction_counters k
                 ON k.campaign_id = kept.old_campaign AND k.jurisdiction = kept.old_jurisdiction
            WHERE NOT same AND old_status IN ('sent', 'bounced')
            GROUP BY 1, 2
            UNION ALL
            -- A count that arrived: a sent row brings its time; a bounced one brings none.
            SELECT campaign_id, jurisdiction,
                   min(finished_at) FILTER (WHERE status = 'sent'),
                   max(finished_at) FILTER (WHERE status = 'sent'),
                   bool_or(status = 'bounced')
            FROM kept WHERE NOT same AND status IN ('sent', 'bounced')
            GROUP BY 1, 2
        ), per_pair AS (
            SELECT campaign_id, jurisdiction, min(first_t) AS first_t, max(last_t) AS last_t,
                   bool_or(breaks) AS breaks
            FROM effects GROUP BY 1, 2
        )
        UPDATE jurisdiction_counters k SET
            first_email = least(k.first_email, p.first_t),
            last_email = greatest(k.last_email, p.last_t),
            times_exact = k.times_exact AND NOT p.breaks
        FROM per_pair p
        WHERE k.campaign_id = p.campaign_id AND k.jurisdiction = p.jurisdiction;
    END IF;
    RETURN NULL;
END $$;

-- Campaigns already under way: the figures as the report counted them from the recipients.
WITH figures AS (
    SELECT r.campaign_id, coalesce(r.jurisdiction, '') AS jurisdiction,
           count(*) FILTER (WHERE bn_letter_owed(r.status, r.channel, r.postal_followup, r.finished_at))
               AS letters_owed,
           count(*) FILTER (WHERE bn_no_contact(r.status, r.email, r.address1, r.finished_at))
               AS no_contact,
           min(r.finished_at) FILTER (WHERE r.status = 'sent') AS first_sent,
           max(r.finished_at) FILTER (WHERE r.status = 'sent') AS last_sent
    FROM recipients r GROUP BY 1, 2
), bounced AS (
    SELECT r.campaign_id, coalesce(r.jurisdiction, '') AS jurisdiction,
           min(a.accepted) AS first_bounced, max(a.accepted) AS last_bounced,
           bool_or(a.accepted IS NULL) AS unknown
    FROM recipients r
    LEFT JOIN LATERAL (SELECT max(d.finished_at) AS accepted FROM delivery_attempts d
                       WHERE d.recipient_id = r.id AND d.outcome = 'sent') a ON TRUE
    WHERE r.status = 'bounced' GROUP BY 1, 2
)
UPDATE jurisdiction_counters k SET
    letters_owed = f.letters_owed, no_contact = f.no_contact,
    first_email = least(f.first_sent, b.first_bounced),
    last_email = greatest(f.last_sent, b.last_bounced),
    times_exact = NOT coalesce(b.unknown, false)
FROM figures f LEFT JOIN bounced b USING (campaign_id, jurisdiction)
WHERE k.campaign_id = f.campaign_id AND k.jurisdiction = f.jurisdiction;
