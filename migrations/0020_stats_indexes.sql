-- `stats` counts shipments by provider, tier, status and activity, and notifications by channel
-- and state. Both groupings read every row (2.1 s at a million shipments and three million
-- notifications on a 2-core machine, past sqlx's one-second warning). With these, they are
-- counted from indexes (0.5 s), and no index is added for a write to keep up:
-- - the status index (migration 0018) also holds the provider and the activity, which change
--   with the status if at all;
-- - the done index (sent and skipped) holds the channel before the time, so that each state's
--   channels are ranges of it; the nightly prune names every channel to keep its cutoff a range
--   (`prune_notifications_sql` in src/storage/maintenance.rs).
-- PostgreSQL's twin is postgres/0010_stats_indexes.sql.
DROP INDEX shipments_status;
CREATE INDEX shipments_status ON shipments (status, tier, provider, active);
DROP INDEX notifications_done;
CREATE INDEX notifications_done ON notifications (state, channel, created_at)
    WHERE state IN ('sent', 'skipped');
