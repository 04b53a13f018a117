-- Polls per minute, provider and result, for `stats` ("polls in the last hour"). The daemon counts
-- in memory and adds its counts here every few seconds and at shutdown; rows older than a day
-- are pruned as it goes.
CREATE TABLE poll_counts (
    minute   INTEGER NOT NULL, -- ms since the epoch, UTC, at the start of the minute
    provider TEXT    NOT NULL,
    result   TEXT    NOT NULL,
    count    INTEGER NOT NULL,
    PRIMARY KEY (minute, provider, result)
) WITHOUT ROWID;

-- A delivery channel that stopped itself (SMS out of credit, credentials refused), for `stats`.
-- The daemon that stopped it writes the row; a daemon start clears the table, since a fresh
-- start tries every channel again.
CREATE TABLE channel_state (
    channel      TEXT    PRIMARY KEY,
    paused_until INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL
);
