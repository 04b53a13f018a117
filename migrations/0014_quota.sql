-- A provider's quota shared by every daemon on one database (issue 17): a GCRA schedule, one row
-- per provider. `next_at_us` is when the next call may leave, in microseconds of the database
-- server's clock (so that daemons whose clocks disagree still agree on it); a grant of k calls
-- moves it k intervals on from itself or from now, whichever is later. On SQLite one daemon
-- paces its calls alone and the table stays empty; it is here so that both engines' schemas agree.
CREATE TABLE quota (
    provider   TEXT    PRIMARY KEY,
    next_at_us INTEGER NOT NULL
) STRICT;
