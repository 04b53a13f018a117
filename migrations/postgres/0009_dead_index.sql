-- As SQLite's 0019_dead_index.sql: the dead notifications, counted, listed and requeued without
-- reading the rest of the outbox.
CREATE INDEX notifications_dead ON notifications (id) WHERE state = 'dead';
