//! PostgreSQL: the operations of `storage/polls.rs`.

#![allow(unused_variables, unused_mut)]

use super::*;

impl Pg {
    pub async fn events(&self, shipment_id: i64) -> Result<Vec<EventRow>> {
        Err(not_yet("events"))
    }

    pub async fn record_poll_error(
        &self,
        id: i64,
        error: &str,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<()> {
        Err(not_yet("record_poll_error"))
    }

    pub async fn record_poll(
        &self,
        shipment_id: i64,
        poll: impl Decide + Sync,
    ) -> Result<Recorded> {
        Err(not_yet("record_poll"))
    }

    pub async fn record_polls<D: Decide + Sync>(
        &self,
        polls: &[(i64, D)],
    ) -> Result<Vec<Recorded>> {
        Err(not_yet("record_polls"))
    }

    pub async fn add_poll_counts(&self, minute: Millis, counts: &[PollCount]) -> Result<()> {
        Err(not_yet("add_poll_counts"))
    }

    pub async fn polls_last_hour(&self, now: Millis) -> Result<Vec<PollCount>> {
        Err(not_yet("polls_last_hour"))
    }

    pub async fn unmapped(&self) -> Result<Vec<UnmappedRow>> {
        Err(not_yet("unmapped"))
    }
}
