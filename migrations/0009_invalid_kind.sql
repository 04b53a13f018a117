-- What kind of reason stopped an invalid shipment (active = 0 with its reason in `error`), so that
-- the daemon can pick the rows it may revive by itself: those stopped for a provider the config
-- did not define, once a restart or a reload brings that provider. NULL for every other row.
--   unknown_provider  the row names a provider the config did not define
--   row               a value of the row itself (a mistyped column, a contact, a time, what the
--                     provider needs and the row lacks)
--   upstream          the provider refused the shipment when it was polled
--   schedule          its next poll was too far ahead ever to come
ALTER TABLE shipments ADD COLUMN invalid_kind TEXT
    CONSTRAINT "invalid_kind must be one of unknown_provider, row, upstream, schedule"
    CHECK (invalid_kind IS NULL OR invalid_kind IN ('unknown_provider', 'row', 'upstream', 'schedule'));

-- Rows stopped before this column existed: the daemon's unknown-provider reason is one fixed
-- sentence, so those are found by it.
UPDATE shipments SET invalid_kind = 'unknown_provider'
    WHERE active = 0 AND error LIKE 'unknown provider "%: configured providers are %; fix the row or add [providers.%] to the config';

-- The candidates of a revival at start or reload, without a scan of the table.
CREATE INDEX shipments_unknown_provider ON shipments (provider)
    WHERE active = 0 AND invalid_kind = 'unknown_provider';
