//! Group commit of polls: polls that finish while a transaction is being written are recorded
//! together in the next one, so that a fast upstream is not held back by one commit per poll.

use std::sync::Arc;

use crate::clock::Millis;
use crate::notify::ChannelRule;
use crate::providers::Trace;
use crate::storage::{Db, Recorded, StorageError};
use crate::track::PollRecord;
use crate::workers::GroupWrite;

/// What a successful poll hands over to be recorded.
pub struct Finished {
    pub shipment_id: i64,
    pub trace: Trace,
    pub now: Millis,
    pub next_poll_at: Millis,
}

/// The outcome, with the trace back (the caller still logs and announces it).
type Outcome = (Result<Recorded, StorageError>, Trace);

pub struct GroupCommit(GroupWrite<Finished, Outcome>);

impl GroupCommit {
    pub fn new(db: Db, channels: Vec<ChannelRule>) -> Self {
        let channels: Arc<[ChannelRule]> = channels.into();
        GroupCommit(GroupWrite::new(move |batch| {
            write(db.clone(), channels.clone(), batch)
        }))
    }

    /// Records one successful poll and returns once it is committed.
    pub async fn record(&self, finished: Finished) -> Result<(Recorded, Trace), StorageError> {
        match self.0.submit(finished).await {
            Some((Ok(recorded), trace)) => Ok((recorded, trace)),
            Some((Err(e), _)) => Err(e),
            None => Err(StorageError::Interrupted),
        }
    }
}

/// Writes a batch in one transaction. Should that fail, each poll is written on its own, so that
/// one bad row costs only its own poll.
async fn write(db: Db, channels: Arc<[ChannelRule]>, batch: Vec<Finished>) -> Vec<Outcome> {
    let records: Vec<(i64, PollRecord<'_>)> = batch
        .iter()
        .map(|f| {
            let record = PollRecord {
                now: f.now,
                trace: &f.trace,
                next_poll_at: f.next_poll_at,
                channels: &channels,
            };
            (f.shipment_id, record)
        })
        .collect();
    let together = if batch.len() > 1 {
        db.record_polls(&records).await.ok()
    } else {
        None
    };
    let outcomes = match together {
        Some(recorded) => recorded.into_iter().map(Ok).collect(),
        None => {
            let mut outcomes = Vec::with_capacity(batch.len());
            for (shipment_id, poll) in records {
                outcomes.push(db.record_poll(shipment_id, poll).await);
            }
            outcomes
        }
    };
    batch
        .into_iter()
        .zip(outcomes)
        .map(|(finished, outcome)| (outcome, finished.trace))
        .collect()
}
