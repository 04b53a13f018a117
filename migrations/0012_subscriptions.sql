-- Kuaidi100 subscription push: one row per shipment of a push-mode provider that was subscribed.
-- `state` is `active` (Kuaidi100 tracks it and posts each change), `ended` (Kuaidi100 said
-- `shutdown`: tracking over, normally signed for) or `aborted` (Kuaidi100 said `abort`: 3天查询无记录
-- or 60天无变化; resubscribed while `subscribes` allows). `last_callback_at` is when the last
-- signed callback for it was saved; fallback queries go to the shipments silent the longest.
CREATE TABLE subscriptions (
    shipment_id      INTEGER PRIMARY KEY REFERENCES shipments (id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    state            TEXT NOT NULL CHECK (state IN ('active', 'ended', 'aborted')),
    subscribed_at    INTEGER NOT NULL,
    subscribes       INTEGER NOT NULL DEFAULT 1,
    last_callback_at INTEGER,
    ended_at         INTEGER,
    message          TEXT
) STRICT;
