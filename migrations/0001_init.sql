-- Times are integer milliseconds since the Unix epoch (UTC), so that the defaults below work for
-- rows inserted by any program and comparisons stay cheap.

-- The public table: shops and their tools INSERT here while the daemon runs. Only order_id and
-- provider are required; every other column has a default.
CREATE TABLE shipments (
    id                INTEGER PRIMARY KEY,
    order_id          TEXT    NOT NULL UNIQUE
        CONSTRAINT "order_id must not be empty" CHECK (length(trim(order_id)) > 0),
    provider          TEXT    NOT NULL
        CONSTRAINT "provider must not be empty" CHECK (length(trim(provider)) > 0),
    tracking_no       TEXT,
    carrier           TEXT,
    tier              TEXT    NOT NULL DEFAULT 'normal'
        CONSTRAINT "tier must be one of high, normal, low" CHECK (tier IN ('high', 'normal', 'low')),
    phone             TEXT,
    email             TEXT,
    status            TEXT    NOT NULL DEFAULT 'pending'
        CONSTRAINT "status must be a canonical status" CHECK (status IN (
            'pending', 'info_received', 'picked_up', 'in_transit', 'out_for_delivery',
            'available_for_pickup', 'failed_attempt', 'exception', 'returned', 'delivered',
            'expired')),
    raw_status        TEXT,
    -- 1 while shipwatch polls it; 0 once terminal, removed from polling, or invalid (see error).
    active            INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    error             TEXT,
    -- Number of status changes seen so far; with the channel it keys the outbox.
    transitions       INTEGER NOT NULL DEFAULT 0,
    -- Set while a poll of the shipment is in flight; a daemon that dies leaves it to expire.
    claimed_until     INTEGER,
    next_poll_at      INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)),
    last_polled_at    INTEGER,
    last_event_at     INTEGER,
    status_changed_at INTEGER,
    created_at        INTEGER NOT NULL DEFAULT (CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER))
);

CREATE INDEX shipments_due ON shipments (next_poll_at) WHERE active = 1;
CREATE INDEX shipments_status ON shipments (status);

-- The trace history of each shipment. Re-reading a trace adds nothing: an event is identified by
-- its time and description.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    shipment_id INTEGER NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    time        INTEGER NOT NULL,
    description TEXT    NOT NULL,
    location    TEXT,
    raw_code    TEXT,
    UNIQUE (shipment_id, time, description)
);

-- The outbox. One row per status change and channel; the unique key makes queueing the same
-- transition twice impossible, even when a poll is replayed after a crash.
CREATE TABLE notifications (
    id              INTEGER PRIMARY KEY,
    -- Stable across retries: the webhook-id header and the payload's id.
    public_id       TEXT    NOT NULL UNIQUE,
    shipment_id     INTEGER NOT NULL REFERENCES shipments (id) ON DELETE CASCADE,
    transition      INTEGER NOT NULL,
    channel         TEXT    NOT NULL CHECK (channel IN ('webhook', 'email', 'sms')),
    previous_status TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    -- The buyer's email address or phone number, for the channels that reach a person.
    recipient       TEXT,
    -- skipped: the shipment has no address for this channel; nothing was sent, nothing failed.
    state           TEXT    NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'sent', 'dead', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    -- Set while a sender holds the row; a lease that expires means the sender died mid-attempt.
    lease_until     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER,
    UNIQUE (shipment_id, transition, channel)
);

CREATE INDEX notifications_due ON notifications (next_attempt_at) WHERE state = 'pending';

-- What the daemon knows about each upstream provider. A rate-limit ban survives restarts; a
-- pause for rejected credentials or configuration is kept for `stats` and lifted by a restart.
CREATE TABLE provider_state (
    provider     TEXT PRIMARY KEY,
    banned_until INTEGER,
    reason       TEXT,
    updated_at   INTEGER NOT NULL,
    paused_until INTEGER,
    pause_reason TEXT
);

-- Provider codes and texts that no mapping table knew, for operators to extend the tables.
CREATE TABLE unmapped (
    provider   TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    count      INTEGER NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen  INTEGER NOT NULL,
    PRIMARY KEY (provider, value)
);
