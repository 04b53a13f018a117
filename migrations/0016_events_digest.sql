-- The digest of the trace events last written for a shipment (track::events_digest): a poll whose
-- trace brings the same list of events again, as most do, no longer hands every event to the
-- database only to find each one stored. The daemon alone writes it; NULL means unknown, and the
-- next poll writes its events again (each one stored already skipped) and the digest with them.
-- No index holds it. Typed like the other columns (0007, 0011), by triggers of its own, so that
-- the typed triggers need not be made again.
ALTER TABLE shipments ADD COLUMN events_digest INTEGER;

CREATE TRIGGER shipments_events_digest_insert BEFORE INSERT ON shipments
WHEN typeof(NEW.events_digest) NOT IN ('integer', 'null')
BEGIN
    SELECT RAISE(ABORT, 'events_digest must be an integer or NULL (leave it to the daemon)');
END;

CREATE TRIGGER shipments_events_digest_update BEFORE UPDATE OF events_digest ON shipments
WHEN typeof(NEW.events_digest) NOT IN ('integer', 'null')
BEGIN
    SELECT RAISE(ABORT, 'events_digest must be an integer or NULL (leave it to the daemon)');
END;
