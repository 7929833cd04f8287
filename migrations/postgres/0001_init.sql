-- breach-notifier schema, PostgreSQL dialect. The SQLite dialect in ../sqlite/ mirrors it table for table.
--
-- Design notes (see docs/database.md and ../shared/performance.md):
-- * recipients is the queue. It is written once per attempt, so no index covers a column that changes on
--   every message (status, attempts, lease, reply): updates stay HOT. Due work is found by key range on
--   (campaign_id, id) for fresh rows and through the narrow partial index on retry_due_at for deferred rows.
-- * Progress comes from campaign_counters, maintained by statement-level triggers in the same transaction
--   as every status change, whoever makes it (the daemon, an import, or an operator with SQL).
-- * delivery_attempts and campaign_events are append-only: triggers refuse UPDATE and DELETE.

CREATE TABLE campaigns (
    id                    BIGSERIAL PRIMARY KEY,
    name                  TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    state                 TEXT NOT NULL DEFAULT 'draft'
                          CHECK (state IN ('draft', 'running', 'paused', 'completed', 'cancelled')),
    -- The campaign file as given (TOML) and the SHA-256 of the definition plus every template source.
    definition            TEXT NOT NULL,
    content_hash          TEXT NOT NULL,
    email_without_consent BOOLEAN NOT NULL DEFAULT FALSE,
    discovered_at         DATE,
    supplements           BIGINT REFERENCES campaigns (id),
    -- Why the campaign is in its state (operator's reason, or a guard's finding).
    state_reason          TEXT,
    -- Write-only mailbox read by the transition trigger: who asks for this state change and why.
    -- The trigger records them in campaign_events and clears them; an update that leaves them empty is
    -- recorded with actor 'sql'.
    change_actor          TEXT,
    change_reason         TEXT,
    created_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at            TIMESTAMPTZ NOT NULL DEFAULT now(),
    started_at            TIMESTAMPTZ,
    finished_at           TIMESTAMPTZ
);

-- Every state change, with who made it and why. Append-only.
CREATE TABLE campaign_events (
    id          BIGSERIAL PRIMARY KEY,
    campaign_id BIGINT NOT NULL REFERENCES campaigns (id),
    at          TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX campaign_events_campaign ON campaign_events (campaign_id, id);

CREATE TABLE recipients (
    id                 BIGSERIAL PRIMARY KEY,
    campaign_id        BIGINT NOT NULL REFERENCES campaigns (id),
    customer_id        TEXT NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 200),
    email              TEXT,
    first_name         TEXT,
    last_name          TEXT,
    locale             TEXT,
    jurisdiction       TEXT,
    electronic_consent BOOLEAN NOT NULL DEFAULT FALSE,
    address1           TEXT,
    address2           TEXT,
    city               TEXT,
    region             TEXT,
    postal_code        TEXT,
    country            TEXT,
    -- Every other column of the import, as a JSON object of strings, for templates.
    -- json, not jsonb: validated on the way in but not decomposed, which keeps bulk imports fast;
    -- templates read it whole.
    attributes         JSON NOT NULL DEFAULT '{}'::json,
    channel            TEXT NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'postal')),
    import_id          BIGINT,
    -- Queue state. Mutable, deliberately not indexed (HOT updates), except retry_due_at's partial index.
    status             TEXT NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'deferred', 'sent', 'failed', 'cancelled', 'postal')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    retry_due_at       TIMESTAMPTZ,
    lease_owner        TEXT,
    lease_expires_at   TIMESTAMPTZ,
    message_id         TEXT,
    last_code          INTEGER,
    last_reply         TEXT,
    fail_reason        TEXT,
    postal_followup    BOOLEAN NOT NULL DEFAULT FALSE,
    created_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    first_attempt_at   TIMESTAMPTZ,
    finished_at        TIMESTAMPTZ,
    CONSTRAINT recipients_one_per_customer UNIQUE (campaign_id, customer_id),
    -- Postal recipients are never sent by email: they stay 'postal' (or are cancelled).
    CONSTRAINT recipients_postal_status CHECK (channel = 'email' OR status IN ('postal', 'cancelled')),
    CONSTRAINT recipients_email_has_address CHECK (channel = 'postal' OR email IS NOT NULL)
) WITH (fillfactor = 70);
-- Fresh work is claimed by key range within a campaign; (campaign_id, id) never changes.
CREATE INDEX recipients_campaign_id ON recipients (campaign_id, id);
-- Deferred work: only rows waiting for a retry carry retry_due_at, so this index stays small and the
-- common queued -> sent update does not touch it (and stays HOT).
CREATE INDEX recipients_retry_due ON recipients (retry_due_at) WHERE retry_due_at IS NOT NULL;

-- One row per SMTP (or file transport) attempt. Append-only: the evidence.
CREATE TABLE delivery_attempts (
    id           BIGSERIAL PRIMARY KEY,
    recipient_id BIGINT NOT NULL REFERENCES recipients (id),
    campaign_id  BIGINT NOT NULL REFERENCES campaigns (id),
    attempt      INTEGER NOT NULL,
    instance     TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'ambiguous')),
    smtp_code    INTEGER,
    reply        TEXT,
    message_id   TEXT NOT NULL
);
CREATE INDEX delivery_attempts_recipient ON delivery_attempts (recipient_id);
-- Daily caps count today's sends per campaign.
CREATE INDEX delivery_attempts_campaign_time ON delivery_attempts (campaign_id, finished_at);

-- O(1) progress: one row per campaign, counts per recipient status.
CREATE TABLE campaign_counters (
    campaign_id BIGINT PRIMARY KEY REFERENCES campaigns (id),
    total       BIGINT NOT NULL DEFAULT 0,
    queued      BIGINT NOT NULL DEFAULT 0,
    deferred    BIGINT NOT NULL DEFAULT 0,
    sent        BIGINT NOT NULL DEFAULT 0,
    failed      BIGINT NOT NULL DEFAULT 0,
    cancelled   BIGINT NOT NULL DEFAULT 0,
    postal      BIGINT NOT NULL DEFAULT 0,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Running daemons announce themselves here; a heartbeat older than its ttl means the instance is gone.
CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    heartbeat_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    stopped_at   TIMESTAMPTZ
);

-- Counters follow every insert and status change, set-based, once per statement.
CREATE FUNCTION bn_counters_after_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO campaign_counters AS c (campaign_id, total, queued, deferred, sent, failed, cancelled, postal)
    SELECT campaign_id, count(*),
           count(*) FILTER (WHERE status = 'queued'), count(*) FILTER (WHERE status = 'deferred'),
           count(*) FILTER (WHERE status = 'sent'), count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'cancelled'), count(*) FILTER (WHERE status = 'postal')
    FROM new_rows GROUP BY campaign_id
    ON CONFLICT (campaign_id) DO UPDATE SET
        total = c.total + EXCLUDED.total, queued = c.queued + EXCLUDED.queued,
        deferred = c.deferred + EXCLUDED.deferred, sent = c.sent + EXCLUDED.sent,
        failed = c.failed + EXCLUDED.failed, cancelled = c.cancelled + EXCLUDED.cancelled,
        postal = c.postal + EXCLUDED.postal, updated_at = now();
    RETURN NULL;
END $$;

CREATE FUNCTION bn_counters_after_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- Old and new rows are counted separately and subtracted, never joined: transition tables have
    -- no index, and joining two large ones (a cancel of millions) would be quadratic. A row whose
    -- status did not change adds +1 and -1 to the same counter; a claim (leases only) changes nothing.
    WITH changes AS (
        SELECT campaign_id, status, 1 AS sign FROM new_rows
        UNION ALL
        SELECT campaign_id, status, -1 FROM old_rows
    ), delta AS (
        SELECT campaign_id,
               coalesce(sum(sign) FILTER (WHERE status = 'queued'), 0) AS queued,
               coalesce(sum(sign) FILTER (WHERE status = 'deferred'), 0) AS deferred,
               coalesce(sum(sign) FILTER (WHERE status = 'sent'), 0) AS sent,
               coalesce(sum(sign) FILTER (WHERE status = 'failed'), 0) AS failed,
               coalesce(sum(sign) FILTER (WHERE status = 'cancelled'), 0) AS cancelled,
               coalesce(sum(sign) FILTER (WHERE status = 'postal'), 0) AS postal
        FROM changes GROUP BY campaign_id
    )
    UPDATE campaign_counters c SET
        queued = c.queued + d.queued, deferred = c.deferred + d.deferred, sent = c.sent + d.sent,
        failed = c.failed + d.failed, cancelled = c.cancelled + d.cancelled, postal = c.postal + d.postal,
        updated_at = now()
    FROM delta d
    WHERE c.campaign_id = d.campaign_id
      AND (d.queued, d.deferred, d.sent, d.failed, d.cancelled, d.postal) <> (0, 0, 0, 0, 0, 0);
    RETURN NULL;
END $$;

-- A recipient's identity never changes (the WHEN clause costs nothing on ordinary updates).
CREATE FUNCTION bn_refuse_identity_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'recipients.campaign_id and customer_id cannot be changed';
END $$;
CREATE TRIGGER recipients_identity_fixed BEFORE UPDATE ON recipients FOR EACH ROW
    WHEN (OLD.campaign_id IS DISTINCT FROM NEW.campaign_id OR OLD.customer_id IS DISTINCT FROM NEW.customer_id)
    EXECUTE FUNCTION bn_refuse_identity_change();

CREATE TRIGGER recipients_counters_insert AFTER INSERT ON recipients
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION bn_counters_after_insert();
CREATE TRIGGER recipients_counters_update AFTER UPDATE ON recipients
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION bn_counters_after_update();

-- Nothing is ever deleted: not a recipient, not an attempt, not an event.
CREATE FUNCTION bn_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is not allowed: this table is an append-only record', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER delivery_attempts_append_only BEFORE UPDATE OR DELETE ON delivery_attempts
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();
CREATE TRIGGER campaign_events_append_only BEFORE UPDATE OR DELETE ON campaign_events
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();
CREATE TRIGGER recipients_no_delete BEFORE DELETE ON recipients
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();
CREATE TRIGGER campaigns_no_delete BEFORE DELETE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION bn_refuse_change();

-- Campaign life cycle, enforced by the database so that an operator's SQL obeys the same rules as the CLI:
-- draft -> running -> paused <-> running -> completed; draft/running/paused -> cancelled.
CREATE FUNCTION bn_campaign_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.state <> 'draft' THEN
        RAISE EXCEPTION 'a new campaign must start in state draft, not %', NEW.state
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO campaign_events (campaign_id, from_state, to_state, actor, reason)
    VALUES (NEW.id, NULL, 'draft', coalesce(NEW.change_actor, 'sql'), coalesce(NEW.change_reason, 'created'));
    INSERT INTO campaign_counters (campaign_id) VALUES (NEW.id);
    RETURN NULL;
END $$;
CREATE TRIGGER campaigns_created AFTER INSERT ON campaigns
    FOR EACH ROW EXECUTE FUNCTION bn_campaign_created();

CREATE FUNCTION bn_campaign_transition() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    actor TEXT := coalesce(NEW.change_actor, 'sql');
    why   TEXT := NEW.change_reason;
BEGIN
    NEW.change_actor := NULL;
    NEW.change_reason := NULL;
    IF NEW.state IS DISTINCT FROM OLD.state THEN
        IF NOT ((OLD.state, NEW.state) IN (('draft', 'running'), ('running', 'paused'), ('paused', 'running'),
                ('running', 'completed'), ('draft', 'cancelled'), ('running', 'cancelled'),
                ('paused', 'cancelled'))) THEN
            RAISE EXCEPTION 'campaign %: illegal state change % -> % (allowed: draft->running, running->paused, paused->running, running->completed, draft/running/paused->cancelled)',
                OLD.id, OLD.state, NEW.state USING ERRCODE = 'check_violation';
        END IF;
        NEW.updated_at := now();
        NEW.state_reason := why;
        IF NEW.state = 'running' AND OLD.started_at IS NULL THEN NEW.started_at := now(); END IF;
        IF NEW.state IN ('completed', 'cancelled') THEN NEW.finished_at := now(); END IF;
        INSERT INTO campaign_events (campaign_id, from_state, to_state, actor, reason)
        VALUES (NEW.id, OLD.state, NEW.state, actor, why);
        -- Cancelling ends every recipient not already finished; rows in flight keep their lease and are
        -- settled by the daemon that holds them.
        IF NEW.state = 'cancelled' THEN
            UPDATE recipients SET status = 'cancelled', retry_due_at = NULL, finished_at = now(),
                                  fail_reason = 'campaign cancelled'
            WHERE campaign_id = NEW.id AND status IN ('queued', 'deferred')
              AND (lease_expires_at IS NULL OR lease_expires_at < now());
        END IF;
        PERFORM pg_notify('breach_notifier_campaigns', NEW.id::text || ':' || NEW.state);
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER campaigns_transition BEFORE UPDATE ON campaigns
    FOR EACH ROW EXECUTE FUNCTION bn_campaign_transition();

-- What operators read: per campaign, state, total and count per recipient status. O(1) per campaign.
CREATE VIEW campaign_progress AS
SELECT c.id AS campaign_id, c.name, c.state, k.total, k.queued, k.deferred, k.sent, k.failed,
       k.cancelled, k.postal, k.updated_at AS last_change_at
FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id;
