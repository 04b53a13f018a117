-- The sender claims only the head of each shipment's queue on a channel: a pending notification
-- waits while an earlier one of the same shipment and channel is pending. This index answers that
-- question from the pending rows alone.
CREATE INDEX notifications_queue ON notifications (shipment_id, channel, id) WHERE state = 'pending';
