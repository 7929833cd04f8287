-- breach-notifier schema, SQLite dialect: the same tables, columns and rules as ../postgres/0001_init.sql.
-- Differences, each deliberate:
-- * Times are INTEGER milliseconds since the Unix epoch (UTC): exact comparisons, no text-format drift.
--   The views add readable *_utc columns.
-- * Counters and the campaign life cycle use row-level triggers (SQLite has no statement triggers).
-- * attributes is a JSON object stored as TEXT.

CREATE TABLE campaigns (
    id                    INTEGER PRIMARY KEY,
    name                  TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    state                 TEXT NOT NULL DEFAULT 'draft'
                          CHECK (state IN ('draft', 'running', 'paused', 'completed', 'cancelled')),
    definition            TEXT NOT NULL,
    content_hash          TEXT NOT NULL,
    email_without_consent INTEGER NOT NULL DEFAULT 0 CHECK (email_without_consent IN (0, 1)),
    discovered_at         TEXT,
    supplements           INTEGER REFERENCES campaigns (id),
    state_reason          TEXT,
    change_actor          TEXT,
    change_reason         TEXT,
    created_at            INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    updated_at            INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    started_at            INTEGER,
    finished_at           INTEGER
);

CREATE TABLE campaign_events (
    id          INTEGER PRIMARY KEY,
    campaign_id INTEGER NOT NULL REFERENCES campaigns (id),
    at          INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT
);
CREATE INDEX campaign_events_campaign ON campaign_events (campaign_id, id);

CREATE TABLE recipients (
    id                 INTEGER PRIMARY KEY,
    campaign_id        INTEGER NOT NULL REFERENCES campaigns (id),
    customer_id        TEXT NOT NULL CHECK (length(customer_id) BETWEEN 1 AND 200),
    email              TEXT,
    first_name         TEXT,
    last_name          TEXT,
    locale             TEXT,
    jurisdiction       TEXT,
    electronic_consent INTEGER NOT NULL DEFAULT 0 CHECK (electronic_consent IN (0, 1)),
    address1           TEXT,
    address2           TEXT,
    city               TEXT,
    region             TEXT,
    postal_code        TEXT,
    country            TEXT,
    attributes         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(attributes)),
    channel            TEXT NOT NULL DEFAULT 'email' CHECK (channel IN ('email', 'postal')),
    import_id          INTEGER,
    status             TEXT NOT NULL DEFAULT 'queued'
                       CHECK (status IN ('queued', 'deferred', 'sent', 'failed', 'cancelled', 'postal')),
    attempts           INTEGER NOT NULL DEFAULT 0,
    next_attempt_at    INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    retry_due_at       INTEGER,
    lease_owner        TEXT,
    lease_expires_at   INTEGER,
    message_id         TEXT,
    last_code          INTEGER,
    last_reply         TEXT,
    fail_reason        TEXT,
    postal_followup    INTEGER NOT NULL DEFAULT 0 CHECK (postal_followup IN (0, 1)),
    created_at         INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    first_attempt_at   INTEGER,
    finished_at        INTEGER,
    CONSTRAINT recipients_one_per_customer UNIQUE (campaign_id, customer_id),
    CONSTRAINT recipients_postal_status CHECK (channel = 'email' OR status IN ('postal', 'cancelled')),
    CONSTRAINT recipients_email_has_address CHECK (channel = 'postal' OR email IS NOT NULL)
);
CREATE INDEX recipients_campaign_id ON recipients (campaign_id, id);
CREATE INDEX recipients_retry_due ON recipients (retry_due_at) WHERE retry_due_at IS NOT NULL;

CREATE TABLE delivery_attempts (
    id           INTEGER PRIMARY KEY,
    recipient_id INTEGER NOT NULL REFERENCES recipients (id),
    campaign_id  INTEGER NOT NULL REFERENCES campaigns (id),
    attempt      INTEGER NOT NULL,
    instance     TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL CHECK (outcome IN ('sent', 'transient', 'permanent', 'ambiguous')),
    smtp_code    INTEGER,
    reply        TEXT,
    message_id   TEXT NOT NULL
);
CREATE INDEX delivery_attempts_recipient ON delivery_attempts (recipient_id);
-- Daily caps count today's sends per campaign.
CREATE INDEX delivery_attempts_campaign_time ON delivery_attempts (campaign_id, finished_at);

CREATE TABLE campaign_counters (
    campaign_id INTEGER PRIMARY KEY REFERENCES campaigns (id),
    total       INTEGER NOT NULL DEFAULT 0,
    queued      INTEGER NOT NULL DEFAULT 0,
    deferred    INTEGER NOT NULL DEFAULT 0,
    sent        INTEGER NOT NULL DEFAULT 0,
    failed      INTEGER NOT NULL DEFAULT 0,
    cancelled   INTEGER NOT NULL DEFAULT 0,
    postal      INTEGER NOT NULL DEFAULT 0,
    updated_at  INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE TABLE instances (
    id           TEXT PRIMARY KEY,
    hostname     TEXT NOT NULL,
    pid          INTEGER NOT NULL,
    version      TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL,
    stopped_at   INTEGER
);

-- Counters, row by row.
CREATE TRIGGER recipients_counters_insert AFTER INSERT ON recipients BEGIN
    INSERT INTO campaign_counters (campaign_id, total, queued, deferred, sent, failed, cancelled, postal)
    VALUES (NEW.campaign_id, 1, NEW.status = 'queued', NEW.status = 'deferred', NEW.status = 'sent',
            NEW.status = 'failed', NEW.status = 'cancelled', NEW.status = 'postal')
    ON CONFLICT (campaign_id) DO UPDATE SET
        total = total + 1, queued = queued + excluded.queued, deferred = deferred + excluded.deferred,
        sent = sent + excluded.sent, failed = failed + excluded.failed,
        cancelled = cancelled + excluded.cancelled, postal = postal + excluded.postal,
        updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER);
END;

CREATE TRIGGER recipients_identity_fixed BEFORE UPDATE OF campaign_id, customer_id ON recipients
WHEN NEW.campaign_id IS NOT OLD.campaign_id OR NEW.customer_id IS NOT OLD.customer_id BEGIN
    SELECT RAISE(ABORT, 'recipients.campaign_id and customer_id cannot be changed');
END;

CREATE TRIGGER recipients_counters_update AFTER UPDATE OF status ON recipients
WHEN NEW.status IS NOT OLD.status BEGIN
    UPDATE campaign_counters SET
        queued = queued + (NEW.status = 'queued') - (OLD.status = 'queued'),
        deferred = deferred + (NEW.status = 'deferred') - (OLD.status = 'deferred'),
        sent = sent + (NEW.status = 'sent') - (OLD.status = 'sent'),
        failed = failed + (NEW.status = 'failed') - (OLD.status = 'failed'),
        cancelled = cancelled + (NEW.status = 'cancelled') - (OLD.status = 'cancelled'),
        postal = postal + (NEW.status = 'postal') - (OLD.status = 'postal'),
        updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE campaign_id = NEW.campaign_id;
END;

-- Nothing is ever deleted; attempts and events are never changed.
CREATE TRIGGER delivery_attempts_no_update BEFORE UPDATE ON delivery_attempts BEGIN
    SELECT RAISE(ABORT, 'UPDATE on delivery_attempts is not allowed: this table is an append-only record');
END;
CREATE TRIGGER delivery_attempts_no_delete BEFORE DELETE ON delivery_attempts BEGIN
    SELECT RAISE(ABORT, 'DELETE on delivery_attempts is not allowed: this table is an append-only record');
END;
CREATE TRIGGER campaign_events_no_update BEFORE UPDATE ON campaign_events BEGIN
    SELECT RAISE(ABORT, 'UPDATE on campaign_events is not allowed: this table is an append-only record');
END;
CREATE TRIGGER campaign_events_no_delete BEFORE DELETE ON campaign_events BEGIN
    SELECT RAISE(ABORT, 'DELETE on campaign_events is not allowed: this table is an append-only record');
END;
CREATE TRIGGER recipients_no_delete BEFORE DELETE ON recipients BEGIN
    SELECT RAISE(ABORT, 'DELETE on recipients is not allowed: this table is an append-only record');
END;
CREATE TRIGGER campaigns_no_delete BEFORE DELETE ON campaigns BEGIN
    SELECT RAISE(ABORT, 'DELETE on campaigns is not allowed: this table is an append-only record');
END;

-- Campaign life cycle (see the PostgreSQL dialect for the rules).
CREATE TRIGGER campaigns_created_draft BEFORE INSERT ON campaigns WHEN NEW.state <> 'draft' BEGIN
    SELECT RAISE(ABORT, 'a new campaign must start in state draft');
END;
CREATE TRIGGER campaigns_created AFTER INSERT ON campaigns BEGIN
    INSERT INTO campaign_events (campaign_id, from_state, to_state, actor, reason)
    VALUES (NEW.id, NULL, 'draft', coalesce(NEW.change_actor, 'sql'), coalesce(NEW.change_reason, 'created'));
    INSERT INTO campaign_counters (campaign_id) VALUES (NEW.id);
    UPDATE campaigns SET change_actor = NULL, change_reason = NULL WHERE id = NEW.id;
END;
CREATE TRIGGER campaigns_illegal_transition BEFORE UPDATE OF state ON campaigns
WHEN NEW.state IS NOT OLD.state AND NOT (
    (OLD.state = 'draft' AND NEW.state IN ('running', 'cancelled')) OR
    (OLD.state = 'running' AND NEW.state IN ('paused', 'completed', 'cancelled')) OR
    (OLD.state = 'paused' AND NEW.state IN ('running', 'cancelled'))) BEGIN
    SELECT RAISE(ABORT, 'illegal campaign state change (allowed: draft->running, running->paused, paused->running, running->completed, draft/running/paused->cancelled)');
END;
CREATE TRIGGER campaigns_transition AFTER UPDATE OF state ON campaigns
WHEN NEW.state IS NOT OLD.state BEGIN
    INSERT INTO campaign_events (campaign_id, from_state, to_state, actor, reason)
    VALUES (NEW.id, OLD.state, NEW.state, coalesce(NEW.change_actor, 'sql'), NEW.change_reason);
    UPDATE campaigns SET
        change_actor = NULL, change_reason = NULL, state_reason = NEW.change_reason,
        updated_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        started_at = CASE WHEN NEW.state = 'running' AND OLD.started_at IS NULL
                          THEN CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) ELSE started_at END,
        finished_at = CASE WHEN NEW.state IN ('completed', 'cancelled')
                           THEN CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER) ELSE finished_at END
    WHERE id = NEW.id;
    UPDATE recipients SET status = 'cancelled', retry_due_at = NULL, fail_reason = 'campaign cancelled',
                          finished_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
    WHERE NEW.state = 'cancelled' AND campaign_id = NEW.id AND status IN ('queued', 'deferred')
      AND (lease_expires_at IS NULL
           OR lease_expires_at < CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER));
END;

CREATE VIEW campaign_progress AS
SELECT c.id AS campaign_id, c.name, c.state, k.total, k.queued, k.deferred, k.sent, k.failed,
       k.cancelled, k.postal, k.updated_at AS last_change_at,
       strftime('%Y-%m-%dT%H:%M:%fZ', k.updated_at / 1000.0, 'unixepoch') AS last_change_utc
FROM campaigns c JOIN campaign_counters k ON k.campaign_id = c.id;
