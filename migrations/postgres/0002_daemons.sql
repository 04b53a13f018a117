-- Daemon identity (issue 17), as SQLite's 0013_daemons.sql: one row per running daemon, refreshed
-- by its heartbeat with what it holds, deleted at a clean stop; several daemons share the table.
CREATE TABLE daemons (
    id         TEXT   PRIMARY KEY,
    host       TEXT   NOT NULL,
    pid        BIGINT NOT NULL,
    version    TEXT   NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    polling    BIGINT NOT NULL DEFAULT 0,
    delivering BIGINT NOT NULL DEFAULT 0
);
