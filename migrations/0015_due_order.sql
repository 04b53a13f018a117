-- The due index orders ties by id, as the claim of due shipments does (oldest due first, then the
-- oldest row), so that a claim among many shipments due at the same moment (an import, a backlog)
-- reads only the rows it takes. SQLite's index held the rowid already; PostgreSQL's needs it
-- spelled out (migrations/postgres/0004_due_order.sql), and both schemas stay the same.
DROP INDEX shipments_due;
CREATE INDEX shipments_due ON shipments (next_poll_at, id) WHERE active = 1;
