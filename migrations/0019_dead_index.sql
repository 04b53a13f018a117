-- The dead notifications, found without reading the rest of the outbox. Dead messages are few
-- (a channel refused them three times), and the rest of the outbox is most of the table: three
-- million sent messages for a shop that keeps 90 days of them. Without this index the `/metrics`
-- gauges counted the dead as what is left of the count of every row (0.9 s a scrape on
-- PostgreSQL at three million), and `retry --dead` and `outbox --state dead` read every row
-- (0.5 and 0.9 s). A row enters and leaves it only when it dies or is requeued.
-- PostgreSQL's twin is postgres/0009_dead_index.sql.
CREATE INDEX notifications_dead ON notifications (id) WHERE state = 'dead';
