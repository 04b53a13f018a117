-- The due index orders ties by id, as the claim of due shipments does (ORDER BY next_poll_at, id):
-- without it, PostgreSQL reads and sorts every shipment due at the same moment (an import, a
-- backlog) to take the first 64 of them. SQLite's twin is ../0015_due_order.sql.
DROP INDEX shipments_due;
CREATE INDEX shipments_due ON shipments (next_poll_at, id) WHERE active = 1;
