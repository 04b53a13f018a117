-- The buyer's OpenID in the shop's WeChat official account, for template messages: optional,
-- like the phone and the email. The typed triggers of 0007 are made again with the new column, so
-- that another program's INSERT or UPDATE is refused with a message naming it, as for the others.
ALTER TABLE shipments ADD COLUMN openid TEXT;

DROP TRIGGER shipments_typed_insert;
DROP TRIGGER shipments_typed_update;

CREATE TRIGGER shipments_typed_insert BEFORE INSERT ON shipments
BEGIN
    SELECT RAISE(ABORT, 'order_id must be text') WHERE typeof(NEW.order_id) NOT IN ('text');
    SELECT RAISE(ABORT, 'provider must be text') WHERE typeof(NEW.provider) NOT IN ('text');
    SELECT RAISE(ABORT, 'tracking_no must be text') WHERE typeof(NEW.tracking_no) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'carrier must be text') WHERE typeof(NEW.carrier) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'tier must be text') WHERE typeof(NEW.tier) NOT IN ('text');
    SELECT RAISE(ABORT, 'phone must be text') WHERE typeof(NEW.phone) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'email must be text') WHERE typeof(NEW.email) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'openid must be text') WHERE typeof(NEW.openid) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'status must be text') WHERE typeof(NEW.status) NOT IN ('text');
    SELECT RAISE(ABORT, 'raw_status must be text') WHERE typeof(NEW.raw_status) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'active must be an integer') WHERE typeof(NEW.active) NOT IN ('integer');
    SELECT RAISE(ABORT, 'error must be text') WHERE typeof(NEW.error) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'transitions must be an integer') WHERE typeof(NEW.transitions) NOT IN ('integer');
    SELECT RAISE(ABORT, 'claimed_until must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.claimed_until) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'next_poll_at must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.next_poll_at) NOT IN ('integer');
    SELECT RAISE(ABORT, 'last_polled_at must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.last_polled_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'last_event_at must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.last_event_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'status_changed_at must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.status_changed_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'created_at must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.created_at) NOT IN ('integer');
    SELECT RAISE(ABORT, 'sub_orders must be text') WHERE typeof(NEW.sub_orders) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'stalls must be an integer') WHERE typeof(NEW.stalls) NOT IN ('integer');
    SELECT RAISE(ABORT, 'stuck_alerted_for must be an integer (milliseconds since 1970-01-01 UTC)') WHERE typeof(NEW.stuck_alerted_for) NOT IN ('integer', 'null');
END;

CREATE TRIGGER shipments_typed_update BEFORE UPDATE ON shipments
BEGIN
    SELECT RAISE(ABORT, 'order_id must be text')
        WHERE NEW.order_id IS NOT OLD.order_id AND typeof(NEW.order_id) NOT IN ('text');
    SELECT RAISE(ABORT, 'provider must be text')
        WHERE NEW.provider IS NOT OLD.provider AND typeof(NEW.provider) NOT IN ('text');
    SELECT RAISE(ABORT, 'tracking_no must be text')
        WHERE NEW.tracking_no IS NOT OLD.tracking_no AND typeof(NEW.tracking_no) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'carrier must be text')
        WHERE NEW.carrier IS NOT OLD.carrier AND typeof(NEW.carrier) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'tier must be text')
        WHERE NEW.tier IS NOT OLD.tier AND typeof(NEW.tier) NOT IN ('text');
    SELECT RAISE(ABORT, 'phone must be text')
        WHERE NEW.phone IS NOT OLD.phone AND typeof(NEW.phone) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'email must be text')
        WHERE NEW.email IS NOT OLD.email AND typeof(NEW.email) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'openid must be text')
        WHERE NEW.openid IS NOT OLD.openid AND typeof(NEW.openid) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'status must be text')
        WHERE NEW.status IS NOT OLD.status AND typeof(NEW.status) NOT IN ('text');
    SELECT RAISE(ABORT, 'raw_status must be text')
        WHERE NEW.raw_status IS NOT OLD.raw_status AND typeof(NEW.raw_status) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'active must be an integer')
        WHERE NEW.active IS NOT OLD.active AND typeof(NEW.active) NOT IN ('integer');
    SELECT RAISE(ABORT, 'error must be text')
        WHERE NEW.error IS NOT OLD.error AND typeof(NEW.error) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'transitions must be an integer')
        WHERE NEW.transitions IS NOT OLD.transitions AND typeof(NEW.transitions) NOT IN ('integer');
    SELECT RAISE(ABORT, 'claimed_until must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.claimed_until IS NOT OLD.claimed_until AND typeof(NEW.claimed_until) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'next_poll_at must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.next_poll_at IS NOT OLD.next_poll_at AND typeof(NEW.next_poll_at) NOT IN ('integer');
    SELECT RAISE(ABORT, 'last_polled_at must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.last_polled_at IS NOT OLD.last_polled_at AND typeof(NEW.last_polled_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'last_event_at must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.last_event_at IS NOT OLD.last_event_at AND typeof(NEW.last_event_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'status_changed_at must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.status_changed_at IS NOT OLD.status_changed_at AND typeof(NEW.status_changed_at) NOT IN ('integer', 'null');
    SELECT RAISE(ABORT, 'created_at must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.created_at IS NOT OLD.created_at AND typeof(NEW.created_at) NOT IN ('integer');
    SELECT RAISE(ABORT, 'sub_orders must be text')
        WHERE NEW.sub_orders IS NOT OLD.sub_orders AND typeof(NEW.sub_orders) NOT IN ('text', 'null');
    SELECT RAISE(ABORT, 'stalls must be an integer')
        WHERE NEW.stalls IS NOT OLD.stalls AND typeof(NEW.stalls) NOT IN ('integer');
    SELECT RAISE(ABORT, 'stuck_alerted_for must be an integer (milliseconds since 1970-01-01 UTC)')
        WHERE NEW.stuck_alerted_for IS NOT OLD.stuck_alerted_for AND typeof(NEW.stuck_alerted_for) NOT IN ('integer', 'null');
END;
