-- An attempt cut short, with no outcome recorded (the daemon was killed or crashed while it was
-- under way), is given back and counted here instead: a kill -9 in the middle of a busy outbox
-- used to spend an attempt of every message in flight, and three kills close together left
-- messages dead that no receiver had refused. `attempt_started` is 1 once the attempt of the
-- current claim has started (meaningful while `lease_until` is set); `cut_short` counts the
-- attempts a message lost that way, and a message cut short too often is given up (see
-- `domain::MOST_ATTEMPTS_CUT_SHORT`). The daemon alone writes both.
ALTER TABLE notifications ADD COLUMN attempt_started INTEGER NOT NULL DEFAULT 0;
ALTER TABLE notifications ADD COLUMN cut_short INTEGER NOT NULL DEFAULT 0;
