//! Group commit: polls that finish while a transaction is being written are recorded together
//! in the next one. SQLite takes one writer at a time and a commit costs far more than the rows
//! in it, so one `BEGIN IMMEDIATE` per batch instead of one per poll is what lets the daemon
//! keep up with a fast upstream.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::clock::Millis;
use crate::notify::ChannelRule;
use crate::providers::Trace;
use crate::storage::{Db, PollRecord, Recorded, StorageError};

/// What a poll hands over to be recorded, and where the outcome goes back (with the trace,
/// which the caller still logs and announces).
struct Finished {
    shipment_id: i64,
    trace: Trace,
    now: Millis,
    next_poll_at: Millis,
    done: oneshot::Sender<(Result<Recorded, StorageError>, Trace)>,
}

pub struct GroupCommit {
    db: Db,
    channels: Arc<[ChannelRule]>,
    pending: Mutex<Vec<Finished>>,
    /// Held while the pending polls are written; the others wait for their outcome.
    leader: Arc<tokio::sync::Mutex<()>>,
}

impl GroupCommit {
    pub fn new(db: Db, channels: Vec<ChannelRule>) -> Self {
        GroupCommit {
            db,
            channels: channels.into(),
            pending: Mutex::new(Vec::new()),
            leader: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Records one successful poll, in a transaction shared with whatever other polls are
    /// waiting, and returns once it is committed.
    pub async fn record(
        &self,
        shipment_id: i64,
        trace: Trace,
        now: Millis,
        next_poll_at: Millis,
    ) -> Result<(Recorded, Trace), StorageError> {
        let (done, mut outcome) = oneshot::channel();
        self.pending.lock().expect("pending lock").push(Finished {
            shipment_id,
            trace,
            now,
            next_poll_at,
            done,
        });
        loop {
            tokio::select! {
                biased;
                answer = &mut outcome => {
                    return match answer {
                        Ok((Ok(recorded), trace)) => Ok((recorded, trace)),
                        Ok((Err(e), _)) => Err(e),
                        Err(_) => Err(StorageError::Interrupted),
                    };
                }
                leader = self.leader.clone().lock_owned() => {
                    let batch = std::mem::take(&mut *self.pending.lock().expect("pending lock"));
                    if !batch.is_empty() {
                        // A task of its own, holding the lock to the end, so that a caller
                        // cancelled mid-commit (shutdown) cannot leave the others without
                        // their outcome.
                        let (db, channels) = (self.db.clone(), self.channels.clone());
                        let _ = tokio::spawn(async move {
                            write(db, channels, batch).await;
                            drop(leader);
                        })
                        .await;
                    }
                }
            }
        }
    }
}

/// Writes a batch in one transaction. Should that fail, each poll is written on its own, so that
/// one bad row costs only its own poll.
async fn write(db: Db, channels: Arc<[ChannelRule]>, batch: Vec<Finished>) {
    let records: Vec<(i64, PollRecord<'_>)> = batch
        .iter()
        .map(|f| (f.shipment_id, record(f, &channels)))
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
    for (finished, outcome) in batch.into_iter().zip(outcomes) {
        let _ = finished.done.send((outcome, finished.trace));
    }
}

fn record<'a>(finished: &'a Finished, channels: &'a [ChannelRule]) -> PollRecord<'a> {
    PollRecord {
        now: finished.now,
        trace: &finished.trace,
        next_poll_at: finished.next_poll_at,
        channels,
    }
}
