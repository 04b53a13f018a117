-- no-transaction
-- (Each statement is a transaction of its own, so that SQLite keeps no statement journal for the
-- UPDATE: in a migration's transaction it would hold in memory a copy of every page the UPDATE
-- changes, 188 MiB for 300,000 shipments. Both statements can run again: a migration cut short
-- is run again whole at the next start.)
--
-- The nightly prune deletes the events of shipments that ended more than `retain` ago, and
-- clears their digest. It chose them by the time they ended alone, so each night it read every
-- finished shipment older than the cutoff, pruned already or not: in a shop that has run for a
-- year the work grew with every shipment ever finished (0.78 s a night, deleting nothing, at
-- 700,000 such shipments, the writer held meanwhile).
--
-- A finished shipment whose events are still kept has a digest (events are written by polls
-- only, with the digest of their trace, and the prune clears the digest with them), so the
-- finished shipments with a digest are those left to prune. This index holds them alone, by the
-- time they ended: a night reads the shipments that ended since the last night, and a shipment
-- leaves the index when its events go.
--
-- Events written before digests were kept (migration 0016) have none: their shipments are marked
-- -1 here, a digest no trace has (digests are never negative), so that the prune finds them and
-- the next poll of one still active writes its trace and digest as for an unknown digest.
-- PostgreSQL's twin is postgres/0011_prune_index.sql.
UPDATE shipments SET events_digest = -1
WHERE events_digest IS NULL
  AND EXISTS (SELECT 1 FROM events WHERE events.shipment_id = shipments.id);

CREATE INDEX IF NOT EXISTS shipments_prunable
    ON shipments (coalesce(status_changed_at, last_event_at, created_at))
    WHERE active = 0 AND status IN ('delivered', 'returned', 'expired')
      AND events_digest IS NOT NULL;
