-- A provider's quota shared by every daemon (see migrations/0014_quota.sql): when its next call
-- may leave, in microseconds of this server's clock.
CREATE TABLE quota (
    provider   TEXT   PRIMARY KEY,
    next_at_us BIGINT NOT NULL
);
