//! What a successful poll hands to the writer: its trace, with what `track` needs to decide the
//! write once the writer has read the shipment's row inside its transaction.

use std::sync::Arc;

use crate::clock::Millis;
use crate::notify::ChannelRule;
use crate::providers::Trace;
use crate::storage::{Decide, PollWrite, ShipmentRow};
use crate::track::{PollRecord, new_public_id, track};

pub struct Finished {
    pub trace: Trace,
    pub now: Millis,
    pub next_poll_at: Millis,
    pub channels: Arc<[ChannelRule]>,
}

impl Decide for Finished {
    fn decide(&self, stored: &ShipmentRow) -> PollWrite<'_> {
        let record = PollRecord {
            now: self.now,
            trace: &self.trace,
            next_poll_at: self.next_poll_at,
            channels: &self.channels,
        };
        track(stored, &record, &mut new_public_id)
    }
}
