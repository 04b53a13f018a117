-- As SQLite's 0021_prune_index.sql: the finished shipments whose events the prune has not yet
-- deleted, by the time they ended, so that a night reads only those that ended since the last.
-- The index's expression also gives the planner statistics of that time, where it had none
-- (it guessed 167,164 shipments for 7,692 and hash-joined every event).
UPDATE shipments SET events_digest = -1
WHERE events_digest IS NULL
  AND EXISTS (SELECT 1 FROM events WHERE events.shipment_id = shipments.id);

CREATE INDEX shipments_prunable
    ON shipments ((coalesce(status_changed_at, last_event_at, created_at)))
    WHERE active = 0 AND status IN ('delivered', 'returned', 'expired')
      AND events_digest IS NOT NULL;
