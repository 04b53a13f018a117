-- As SQLite's 0016_events_digest.sql: the digest of the trace events last written for a
-- shipment, so that a poll bringing the same list of events again writes none of them.
ALTER TABLE shipments ADD COLUMN events_digest BIGINT;
