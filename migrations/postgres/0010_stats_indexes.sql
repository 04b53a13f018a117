-- As SQLite's 0020_stats_indexes.sql: `stats` counts shipments and notifications from indexes.
DROP INDEX shipments_status;
CREATE INDEX shipments_status ON shipments (status, tier, provider, active);
DROP INDEX notifications_done;
CREATE INDEX notifications_done ON notifications (state, channel, created_at)
    WHERE state IN ('sent', 'skipped');
