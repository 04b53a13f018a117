-- As SQLite's 0018_gauge_indexes.sql: the `/metrics` gauges count shipments by status and tier
-- and notifications by state from indexes instead of reading every row at each scrape.
DROP INDEX shipments_status;
CREATE INDEX shipments_status ON shipments (status, tier);
DROP INDEX notifications_done;
CREATE INDEX notifications_done ON notifications (state, created_at) WHERE state IN ('sent', 'skipped');
