-- Stuck-parcel alerts. A stall is announced once: `stuck_alerted_for` holds the time of the last
-- activity the latest alert was about, so a new event followed by a new stall alerts again.
-- `stalls` counts the alerts and keys their outbox rows, as `transitions` does for status changes.
ALTER TABLE shipments ADD COLUMN stalls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shipments ADD COLUMN stuck_alerted_for INTEGER;

-- The outbox learns what a row announces. The unique key now includes the kind, so the stall
-- alerts of a shipment never collide with its status changes. SQLite cannot change a table's
-- constraints in place, hence the copy; nothing references this table.
CREATE TABLE notifications_new (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    shipment_id     INTEGER NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    -- status_changed: `transition` is the shipment's transition count; stuck: its stall count.
    kind            TEXT    NOT NULL DEFAULT 'status_changed'
        CHECK (kind IN ('status_changed', 'stuck')),
    transition      INTEGER NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    previous_status TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    recipient       TEXT,
    state           TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'dead', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    UNIQUE (shipment_id, kind, transition, channel)
);

INSERT INTO notifications_new (id, public_id, shipment_id, transition, channel, previous_status,
    status, payload, recipient, state, attempts, next_attempt_at, lease_until, last_error,
    created_at, sent_at)
SELECT id, public_id, shipment_id, transition, channel, previous_status, status, payload,
    recipient, state, attempts, next_attempt_at, lease_until, last_error, created_at, sent_at
FROM notifications;

DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
-- Pruning looks for old delivered rows.
CREATE INDEX notifications_done ON notifications (created_at) WHERE state IN ('sent', 'skipped');
