-- Daemon identity (issue 17): each running daemon's row, written at its start, refreshed by its
-- heartbeat every few seconds with what it holds (polls and deliveries under way, counted in
-- memory), and deleted when it stops cleanly. `stats` shows them: a row not refreshed within a
-- few heartbeats is a daemon that died or lost the database. Old dead rows are pruned when a
-- daemon registers. On SQLite the file lock still allows one daemon per file.
CREATE TABLE daemons (
    id         TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    version    TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    polling    INTEGER NOT NULL DEFAULT 0,
    delivering INTEGER NOT NULL DEFAULT 0
) STRICT;
