-- Every claim of the outbox first ends the leases that ran out on a last attempt. Without an
-- index on the lease that look-up read every pending row, so each claim cost grew with the
-- backlog: 100,000 pending notifications drained at a few hundred a second.
CREATE INDEX notifications_leased ON notifications (lease_until)
    WHERE state = 'pending' AND lease_until IS NOT NULL;
