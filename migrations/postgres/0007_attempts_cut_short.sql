-- As SQLite's 0017_attempts_cut_short.sql: an attempt cut short with no outcome recorded is
-- given back and counted in `cut_short`; `attempt_started` says the current claim's attempt
-- has started.
ALTER TABLE notifications ADD COLUMN attempt_started BIGINT NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN cut_short BIGINT NOT NULL DEFAULT 0;
