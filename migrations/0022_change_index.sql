-- no-transaction
-- (One statement, its own transaction: SQLite keeps no statement journal for it. It can run
-- again: a migration cut short is run again whole at the next start.)
--
-- `list --since` and the API's `updated_since` keep the shipments whose status changed (or, for
-- one whose status never changed, that were added) at or after a time. They read along the
-- table to find them: at a million shipments each page read most of the table (0.13–0.26 s)
-- to find the few hundred a shop's system asks for at its next sync. This index holds every
-- shipment by that time, so that a listing of few can take them from it. A poll writes it only
-- when it changes a status: a poll that brings events without a new status leaves the column
-- alone. PostgreSQL's twin is postgres/0012_change_index.sql.
CREATE INDEX IF NOT EXISTS shipments_changed
    ON shipments (coalesce(status_changed_at, created_at));
