-- The group robots (DingTalk, WeCom, Feishu) and WeChat template messages become outbox
-- channels. SQLite cannot change a CHECK in place, so the table is copied as 0002 did: every
-- column, constraint and row is kept, and the indexes of 0002, 0005 and 0008 are made again.
-- Nothing references this table.
CREATE TABLE notifications_new (
    id              INTEGER PRIMARY KEY,
    public_id       TEXT    NOT NULL UNIQUE,
    shipment_id     INTEGER NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    -- status_changed: `transition` is the shipment's transition count; stuck: its stall count.
    kind            TEXT    NOT NULL DEFAULT 'status_changed'
        CHECK (kind IN ('status_changed', 'stuck')),
    transition      INTEGER NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN (
        'webhook', 'email', 'sms', 'dingtalk', 'wecom', 'feishu', 'wechat')),
    previous_status TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    -- The buyer's email address, phone number or OpenID, for the channels that reach a person.
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

INSERT INTO notifications_new (id, public_id, shipment_id, kind, transition, channel,
    previous_status, status, payload, recipient, state, attempts, next_attempt_at, lease_until,
    last_error, created_at, sent_at)
SELECT id, public_id, shipment_id, kind, transition, channel, previous_status, status, payload,
    recipient, state, attempts, next_attempt_at, lease_until, last_error, created_at, sent_at
FROM notifications;

DROP TABLE notifications;
ALTER TABLE notifications_new RENAME TO notifications;

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';
CREATE INDEX notifications_done ON notifications (created_at) WHERE state IN ('sent', 'skipped');
CREATE INDEX notifications_leased ON notifications (lease_until)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
CREATE INDEX notifications_queue ON notifications (shipment_id, channel, id) WHERE state = 'pending';
